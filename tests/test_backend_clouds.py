"""Backend (bucket) jobs against real clouds' stand-ins: S3 on moto, GCS on the emulator.

test_backend.py shows these behaviours on the AIStore stand-in; here the same jobs list
and fetch through moto's real HTTP server (``s3://``) and gcp-storage-emulator (``gs://``),
and through :class:`~servers_gcs.FakeGcs` where the emulator cannot serve what a test
needs (names such as ``../evil.txt``, paginated listings).

Requests are counted as test_aws.py and test_gcs.py count them: botocore's event hooks
for S3, a recording ``requests.Session`` (or FakeGcs's own log) for GCS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests
from conftest import list_files as files
from conftest import make_random_bytes
from servers_gcs import (  # noqa: F401 - fixtures
    FakeGcs,
    Recorder,
    fake_gcs_fixture,
    gcs_bucket_fixture,
    gcs_emulator_fixture,
    gcs_env_fixture,
    upload,
)
from servers_s3 import (  # noqa: F401 - fixtures
    moto_server_fixture,
    s3_fixture,
    s3_module_fixture,
)

import dlutils
from dlutils import Job, State
from dlutils.freshness import Manifest
from dlutils.jobs import runner as job_module
from dlutils.sources import aws, gcs

DEADLINE = 60  # seconds a job or a condition may take before the test fails


def finished(job: Job) -> dlutils.JobStatus:
    status = job.wait(DEADLINE)
    assert status.state is State.FINISHED, status
    return status


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting, after {DEADLINE} s, for {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------- the clouds


@dataclass
class S3Call:
    operation: str
    params: dict[str, Any]


def record_s3_calls(monkeypatch: pytest.MonkeyPatch) -> list[S3Call]:
    """Every S3 request dlutils makes from now on (as test_aws.py's ``calls`` fixture)."""
    fresh = aws._Clients()
    monkeypatch.setattr(aws, "_CLIENTS", fresh)
    log: list[S3Call] = []
    create = fresh._create

    def recording(session, options, signed):
        client = create(session, options, signed)

        def record(params, model, **_):
            log.append(S3Call(model.name, dict(params)))

        client.meta.events.register("provide-client-params.s3", record)
        return client

    monkeypatch.setattr(fresh, "_create", recording)
    return log


class S3Cloud:
    """A fresh moto bucket; object requests seen through botocore's event hooks."""

    scheme = "s3"
    provider = "aws"

    def __init__(self, bucket: Any, monkeypatch: pytest.MonkeyPatch):
        self.bucket = bucket
        self.name = bucket.name
        self.calls = record_s3_calls(monkeypatch)
        self.opts: dict[str, Any] = {}

    def uri(self, key: str = "") -> str:
        return self.bucket.uri(key)

    def put(self, key: str, data: bytes) -> str | None:
        """Store an object; its new version id (None on an unversioned bucket)."""
        return self.bucket.put(key, data).get("VersionId")

    def delete(self, key: str) -> None:
        self.bucket.client.delete_object(Bucket=self.name, Key=key)

    def enable_versioning(self) -> None:
        self.bucket.enable_versioning()

    def clear(self) -> None:
        self.calls.clear()

    def object_requests(self) -> list[tuple[str, str]]:
        """(operation, key) of every request for one object (listings left out)."""
        return [(c.operation, c.params["Key"]) for c in self.calls if "Key" in c.params]

    def listings(self) -> int:
        return sum(c.operation == "ListObjectsV2" for c in self.calls)


class GcsCloud:
    """A fresh bucket in gcp-storage-emulator; requests seen through a recording session."""

    scheme = "gs"
    provider = "gcp"

    def __init__(self, endpoint: str, bucket: str):
        self.endpoint = endpoint
        self.name = bucket
        self.session = Recorder()
        self.opts: dict[str, Any] = {"session": self.session}

    def uri(self, key: str = "") -> str:
        return f"gs://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Store an object; its new generation."""
        return upload(self.endpoint, self.name, key, data)["generation"]

    def delete(self, key: str) -> None:
        url = f"{self.endpoint}/storage/v1/b/{self.name}/o/{quote(key, safe='')}"
        requests.delete(url, timeout=10).raise_for_status()

    def enable_versioning(self) -> None:
        pass  # every upload is a new generation

    def clear(self) -> None:
        self.session.sent.clear()

    def object_requests(self) -> list[tuple[str, str]]:
        """("media" or "metadata", name) of every request for one object."""
        head = f"/storage/v1/b/{self.name}/o/"
        found = []
        for request in self.session.sent:
            parts = urlsplit(request.url)
            if parts.path.startswith(head):
                kind = "media" if "alt=media" in parts.query else "metadata"
                found.append((kind, unquote(parts.path[len(head) :])))
        return found

    def listings(self) -> int:
        path = f"/storage/v1/b/{self.name}/o"
        return sum(urlsplit(r.url).path == path for r in self.session.sent)


@pytest.fixture(params=["s3", "gcs"])
def cloud(request, monkeypatch):
    """The same test on a fresh moto bucket and on a fresh emulator bucket."""
    if request.param == "s3":
        return S3Cloud(request.getfixturevalue("s3"), monkeypatch)
    monkeypatch.setattr(gcs, "_ADC", gcs._Adc())  # no credentials left by another test
    endpoint = request.getfixturevalue("gcs_env")
    return GcsCloud(endpoint, request.getfixturevalue("gcs_bucket"))


def body(i: int, size: int = 100) -> bytes:
    return make_random_bytes(size, seed=i)


def fill(cloud, keys: list[str]) -> dict[str, bytes]:
    """Put a distinct body under every key; the bodies by key."""
    contents = {key: body(i) for i, key in enumerate(keys)}
    for key, data in contents.items():
        cloud.put(key, data)
    return contents


TRAIN = [f"data/train/{i:02d}.tgz" for i in range(4)] + [
    "data/train/notes.txt",
    "data/train/sub/04.tgz",
    "data/val/00.tgz",
    "other/00.tgz",
]


# --------------------------------------------------------------------------- names, filters


def test_suffix_names_files_relative_to_the_folder_with_every_byte_right(cloud, tmp_path):
    contents = fill(cloud, TRAIN)
    status = finished(Job.backend(cloud.uri("data/train/"), tmp_path, suffix=".tgz").start())
    assert (status.total, status.finished, status.skipped, status.errors) == (5, 5, 0, 0)
    expected = ["00.tgz", "01.tgz", "02.tgz", "03.tgz", "sub/04.tgz"]
    assert files(tmp_path) == expected
    for name in expected:
        assert (tmp_path / name).read_bytes() == contents["data/train/" + name], name
    assert status.bytes == 5 * 100


def test_prefix_keeps_its_folders_and_combines_with_suffix(cloud, tmp_path):
    contents = fill(cloud, TRAIN)
    by_prefix = Job.backend(cloud.uri("data/"), tmp_path / "a", prefix="train/s").start()
    assert finished(by_prefix).finished == 1
    assert files(tmp_path / "a") == ["train/sub/04.tgz"]
    assert (tmp_path / "a/train/sub/04.tgz").read_bytes() == contents["data/train/sub/04.tgz"]

    # A folder written without its final '/', a prefix and a suffix together.
    both = Job.backend(cloud.uri("data"), tmp_path / "b", prefix="train/", suffix=".txt")
    assert finished(both.start()).total == 1
    assert files(tmp_path / "b") == ["train/notes.txt"]
    assert (tmp_path / "b/train/notes.txt").read_bytes() == contents["data/train/notes.txt"]

    whole = finished(Job.backend(cloud.uri(), tmp_path / "c", prefix="data/v").start())
    assert files(tmp_path / "c") == ["data/val/00.tgz"]
    assert whole.description.startswith(cloud.uri() + "data/v")


# --------------------------------------------------------------------------- skipping


def test_a_rerun_skips_everything_without_an_object_request(cloud, tmp_path):
    fill(cloud, TRAIN)
    first = finished(Job.backend(cloud.uri("data/"), tmp_path, **cloud.opts).start())
    assert (first.finished, first.skipped, first.errors) == (7, 0, 0)
    cloud.clear()
    again = finished(Job.backend(cloud.uri("data/"), tmp_path, **cloud.opts).start())
    assert (again.total, again.finished, again.skipped, again.bytes) == (7, 7, 7, 0)
    assert cloud.object_requests() == []  # the listing said enough
    assert cloud.listings() == 1


def test_a_new_version_is_fetched_again_and_the_others_skipped(cloud, tmp_path):
    cloud.enable_versioning()
    keys = [f"v/{i}.bin" for i in range(4)]
    first_versions = {key: cloud.put(key, body(i)) for i, key in enumerate(keys)}
    finished(Job.backend(cloud.uri("v/"), tmp_path, **cloud.opts).start())
    with Manifest(tmp_path) as manifest:
        assert manifest.get("2.bin").version == first_versions["v/2.bin"]

    new_version = cloud.put("v/2.bin", body(99))  # the same size, another content
    assert new_version and new_version != first_versions["v/2.bin"]
    cloud.clear()
    status = finished(Job.backend(cloud.uri("v/"), tmp_path, **cloud.opts).start())
    assert (status.finished, status.skipped, status.errors, status.bytes) == (4, 3, 0, 100)
    assert {kind for kind, _ in cloud.object_requests()} <= {"GetObject", "media"}
    assert [key for _, key in cloud.object_requests()] == ["v/2.bin"]  # one GET, no HEAD
    assert (tmp_path / "2.bin").read_bytes() == body(99)
    for i in (0, 1, 3):
        assert (tmp_path / f"{i}.bin").read_bytes() == body(i)
    with Manifest(tmp_path) as manifest:
        assert manifest.get("2.bin").version == new_version


# --------------------------------------------------------------------------- sync


def test_sync_deletes_exactly_the_vanished_objects(cloud, http_server, tmp_path):
    keys = [f"train/{i:02d}.tgz" for i in range(8)] + ["train/notes.txt", "val/00.tgz"]
    fill(cloud, keys)
    finished(Job.backend(cloud.uri("train/"), tmp_path).start())
    # Files that did not come from this bucket folder, in the same destination:
    (tmp_path / "mine.tgz").write_bytes(b"a user's own file")
    http_server.put("web.tgz", b"from a web link")
    dlutils.http_download(http_server.url_for("web.tgz"), tmp_path)
    (tmp_path / "07.tgz").write_bytes(b"edited by hand")  # downloaded, then changed
    for key in ("train/01.tgz", "train/02.tgz", "train/07.tgz", "train/notes.txt"):
        cloud.delete(key)

    status = finished(Job.backend(cloud.uri("train/"), tmp_path, sync=True).start())
    assert status.deleted == 3  # 01, 02 and notes.txt; 07 was changed by hand
    assert (status.finished, status.skipped, status.errors) == (5 + 3, 5, 0)
    assert status.total == 5 + 3 and status.pending == 0
    assert status.to_dict()["deleted_cnt"] == 3
    assert files(tmp_path) == [
        "00.tgz",
        "03.tgz",
        "04.tgz",
        "05.tgz",
        "06.tgz",
        "07.tgz",
        "mine.tgz",
        "web.tgz",
    ]
    assert (tmp_path / "07.tgz").read_bytes() == b"edited by hand"
    assert (tmp_path / "mine.tgz").read_bytes() == b"a user's own file"
    assert (tmp_path / "web.tgz").read_bytes() == b"from a web link"
    with Manifest(tmp_path) as manifest:
        assert "01.tgz" not in manifest and "notes.txt" not in manifest
        assert "web.tgz" in manifest  # still known, from its own source

    again = finished(Job.backend(cloud.uri("train/"), tmp_path, sync=True).start())
    assert (again.deleted, again.finished, again.skipped) == (0, 5, 5)


# --------------------------------------------------------------------------- entry points


def test_download_infers_a_backend_job_with_a_suffix(cloud, tmp_path):
    contents = fill(cloud, ["folder/a.tgz", "folder/b.txt", "folder/deep/c.tgz", "x.tgz"])
    job = dlutils.download(f"{cloud.scheme}://{cloud.name}/folder/", tmp_path, suffix=".tgz")
    status = finished(job)
    assert (status.total, status.finished) == (2, 2)
    assert files(tmp_path) == ["a.tgz", "deep/c.tgz"]
    assert (tmp_path / "deep/c.tgz").read_bytes() == contents["folder/deep/c.tgz"]


def test_from_request_with_a_bucket_name_and_provider(cloud, tmp_path):
    contents = fill(cloud, ["train/0.tgz", "val/0.tgz", "val/1.tgz", "val/notes.txt"])
    request = {
        "type": "backend",
        "bucket": {"name": cloud.name, "provider": cloud.provider},
        "prefix": "val/",
        "suffix": ".tgz",
        "synchronize": True,
        "description": f"validation set on {cloud.provider}",
    }
    job = Job.from_request(request, tmp_path)
    assert job.description == f"validation set on {cloud.provider}"
    status = finished(job.start())
    assert (status.total, status.finished, status.errors) == (2, 2, 0)
    assert files(tmp_path) == ["val/0.tgz", "val/1.tgz"]
    assert (tmp_path / "val/1.tgz").read_bytes() == contents["val/1.tgz"]
    cloud.delete("val/0.tgz")
    status = finished(Job.from_request(request, tmp_path).start())
    assert (status.deleted, status.finished, status.skipped) == (1, 2, 1)
    assert files(tmp_path) == ["val/1.tgz"]


# --------------------------------------------------------------------------- listing pages


def gate_fetches(monkeypatch) -> threading.Event:
    """Hold every object transfer of a job until the returned event is set."""
    gate = threading.Event()
    real = job_module.fetch

    def held(*args, **kwargs):
        if not gate.wait(DEADLINE):
            raise TimeoutError("the test never opened the gate")
        return real(*args, **kwargs)

    monkeypatch.setattr(job_module, "fetch", held)
    return gate


MANY = 1050


@pytest.fixture(scope="module")
def many(s3_module):
    """1,050 tiny objects under ``many/``, made once for the module."""
    s3_module.put_many({f"many/{i:04d}.bin": b"%d" % i for i in range(MANY)}, workers=16)
    return s3_module


def test_s3_more_than_1000_keys_total_known_once_the_listing_ends(many, tmp_path, monkeypatch):
    calls = record_s3_calls(monkeypatch)
    gate = gate_fetches(monkeypatch)
    job = Job.backend(many.uri("many/"), tmp_path).start()
    window = 2 * job_module.DEFAULT_WORKERS  # objects handed out ahead of the transfers
    try:
        poll(lambda: job.status().scheduled == window, f"{window} objects scheduled")
        status = job.status()
        assert status.state is State.RUNNING
        assert status.total is None and not status.all_dispatched  # still listing
        assert [c.operation for c in calls] == ["ListObjectsV2"]  # the first page only
    finally:
        gate.set()
    status = finished(job)
    assert (status.total, status.finished, status.errors) == (MANY, MANY, 0)
    assert status.all_dispatched and status.pending == 0
    pages = [c.params for c in calls if c.operation == "ListObjectsV2"]
    assert len(pages) == 2 and "ContinuationToken" in pages[1]
    assert len(files(tmp_path)) == MANY
    assert (tmp_path / "1049.bin").read_bytes() == b"1049"  # from the second page

    calls.clear()
    again = finished(Job.backend(many.uri("many/"), tmp_path).start())
    assert (again.total, again.finished, again.skipped, again.bytes) == (MANY, MANY, MANY, 0)
    assert [c.operation for c in calls] == ["ListObjectsV2"] * 2  # no object request


def test_gcs_total_known_once_the_last_page_is_listed(fake_gcs: FakeGcs, tmp_path, monkeypatch):
    fake_gcs.page_size = 3
    for i in range(10):
        fake_gcs.put(f"p/{i}.bin", bytes([i]) * 10)
    gate = gate_fetches(monkeypatch)
    job = Job.backend(fake_gcs.uri("p/"), tmp_path, connections=2).start()
    try:
        poll(lambda: job.status().scheduled == 2, "2 objects scheduled")
        status = job.status()
        assert status.total is None and not status.all_dispatched
        assert len(fake_gcs.listings()) == 1
    finally:
        gate.set()
    status = finished(job)
    assert (status.total, status.finished, status.errors) == (10, 10, 0)
    tokens = [q.get("pageToken", [None])[0] for q in fake_gcs.listings()]
    assert tokens == [None, "3", "6", "9"]
    assert files(tmp_path) == [f"{i}.bin" for i in range(10)]
    assert (tmp_path / "9.bin").read_bytes() == bytes([9]) * 10


# --------------------------------------------------------------------------- traversal keys

EVIL = ["../evil.txt", "a/../../b.txt"]


def test_s3_traversal_keys_are_errors_for_those_objects_only(s3, tmp_path, monkeypatch):
    calls = record_s3_calls(monkeypatch)
    for key in EVIL:
        s3.put(key, b"evil")
    s3.put("good/1.txt", b"one")
    s3.put("good/2.txt", b"two")
    dest = tmp_path / "dest"
    status = finished(Job.backend(s3.uri(), dest, sync=True).start())
    assert (status.total, status.finished, status.errors, status.deleted) == (4, 2, 2, 0)
    assert sorted(name for name, _ in status.download_errors) == EVIL
    assert all("not safe" in error for _, error in status.download_errors)
    assert files(tmp_path) == ["dest/good/1.txt", "dest/good/2.txt"]  # nothing outside
    assert (dest / "good/2.txt").read_bytes() == b"two"
    assert all(c.params.get("Key") not in EVIL for c in calls)  # never asked for


def test_gcs_traversal_names_are_errors_for_those_objects_only(fake_gcs: FakeGcs, tmp_path):
    for name in EVIL:
        fake_gcs.put(name, b"evil")
    fake_gcs.put("good/1.txt", b"one")
    fake_gcs.put("good/2.txt", b"two")
    dest = tmp_path / "dest"
    status = finished(Job.backend(fake_gcs.uri(), dest, sync=True).start())
    assert (status.total, status.finished, status.errors, status.deleted) == (4, 2, 2, 0)
    assert sorted(name for name, _ in status.download_errors) == EVIL
    assert all("not safe" in error for _, error in status.download_errors)
    assert files(tmp_path) == ["dest/good/1.txt", "dest/good/2.txt"]  # nothing outside
    assert (dest / "good/1.txt").read_bytes() == b"one"
    asked = [path for path, _, _ in fake_gcs.seen if not path.endswith("/o")]
    assert asked and not any("evil" in path or "b.txt" in path for path in asked)


def test_s3_a_delete_marker_on_a_versioned_bucket_is_a_vanished_object(s3, tmp_path):
    s3.enable_versioning()
    for key in ("k/a.bin", "k/b.bin", "k/c.bin"):
        s3.put(key, key.encode())
    finished(Job.backend(s3.uri("k/"), tmp_path).start())
    s3.client.delete_object(Bucket=s3.name, Key="k/b.bin")  # older versions stay
    status = finished(Job.backend(s3.uri("k/"), tmp_path, sync=True).start())
    assert (status.deleted, status.finished, status.skipped) == (1, 3, 2)
    assert files(tmp_path) == ["a.bin", "c.bin"]


# --------------------------------------------------------------------------- names that clash


def test_an_object_named_like_a_local_folder_is_an_error_not_written_inside_it(cloud, tmp_path):
    cloud.put("x/x", b"from x/x")
    finished(Job.backend(cloud.uri(), tmp_path).start())
    assert (tmp_path / "x" / "x").read_bytes() == b"from x/x"
    cloud.delete("x/x")
    cloud.put("x", b"object x")  # its local path, dest/x, is now a folder
    status = finished(Job.backend(cloud.uri(), tmp_path).start())
    assert (tmp_path / "x" / "x").read_bytes() == b"from x/x"  # not this object's file
    assert (status.finished, status.errors) == (0, 1)
    assert status.download_errors[0][0] == "x"
