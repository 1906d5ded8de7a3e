"""Issue 14 item 2: every source streams into an object store through its own Remote.

``s3://``, ``gs://``, ``ais://`` and ``hf://`` objects go into ``memory://`` and ``s3://``
(moto) as http(s) links do: visible only once verified, a re-run current by the store's
record with no body fetched, backend and hub jobs (and a backend ``sync=True``) into a
store, and ``storage_options`` that carry a credential no message ever shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import urlsplit

import pytest
from servers_gcs import (  # noqa: F401 - fixtures
    fake_gcs_fixture,
    gcs_bucket_fixture,
    gcs_emulator_fixture,
    gcs_env_fixture,
    upload,
)
from servers_s3 import _new_bucket, moto_server_fixture, s3_fixture  # noqa: F401 - fixtures
from stores_support import (
    blob,
    memory_fs_fixture,  # noqa: F401 - fixture
    open_uploads,
    s3_bytes,
    s3_keys,
)

import dlutils
from dlutils import InvalidInputError, Job
from dlutils.errors import RemoteChangedError
from dlutils.jobs.elsewhere import check_sendable
from dlutils.sandbox.aistore import AisStandIn
from dlutils.sandbox.hf_hub import HubStandIn
from dlutils.sources import fetch
from dlutils.sources.hf import hf_download
from dlutils.stores import objects
from dlutils.transfer import TransferOptions

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def other(moto_server):
    """A second bucket on the moto server: the destination of an s3 -> s3 copy."""
    return _new_bucket(moto_server)


@pytest.fixture
def moto_log(monkeypatch):
    """Every request moto's server receives from now on, seen by moto's own request hook
    (its recorder, in this process) as ``(method, bucket, key, query)``; ``.reset()``."""
    from moto.moto_api import recorder

    seen: list[tuple[str, str, str, str]] = []

    def record(request, body=None):
        parts = urlsplit(request.url)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        seen.append((request.method, bucket, key, parts.query, request.headers.get("Range")))

    monkeypatch.setattr(recorder, "_record_request", record)

    def requests() -> list[tuple[str, str, str, str]]:
        return list(seen)

    requests.reset = seen.clear  # type: ignore[attr-defined]
    return requests


def body_gets(log, bucket: str) -> list:
    """GETs of an object of ``bucket`` (not listings, not the bucket itself)."""
    return [r for r in log() if r[0] == "GET" and r[1] == bucket and r[2]]


def test_an_s3_object_into_another_bucket_and_a_rerun_gets_no_body(s3, other, moto_log):
    data = blob(300_000, seed=1)
    s3.put("src/table.bin", data)
    got = dlutils.download(s3.uri("src/table.bin"), other.uri("copy/")).wait(60)
    assert (got.finished, got.errors, got.skipped) == (1, 0, 0), got.download_errors
    assert sha(s3_bytes(other, "copy/table.bin")) == sha(data)
    assert s3_keys(other) == ["copy/table.bin"]  # the record is the object's metadata
    meta = other.client.head_object(Bucket=other.name, Key="copy/table.bin")["Metadata"]
    assert json.loads(meta["dlutils"])["source"] == s3.uri("src/table.bin")
    moto_log.reset()
    again = fetch(s3.uri("src/table.bin"), other.uri("copy/"), TransferOptions())
    assert again.skipped and again.path == other.uri("copy/table.bin")
    assert body_gets(moto_log, s3.name) == []  # one HEAD of the source decided
    s3.put("src/table.bin", data[::-1])  # replaced: fetched again
    moto_log.reset()
    assert not fetch(s3.uri("src/table.bin"), other.uri("copy/"), TransferOptions()).skipped
    assert sha(s3_bytes(other, "copy/table.bin")) == sha(data[::-1])
    assert len(body_gets(moto_log, s3.name)) == 1


def test_a_large_s3_object_goes_into_s3_in_parts(s3, other, monkeypatch, moto_log):
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(17 * MiB, seed=2)
    s3.put("big.bin", data)
    options = TransferOptions(segments=4, segment_threshold=8 * MiB)
    got = fetch(s3.uri("big.bin"), other.uri("big.bin"), options)
    assert (got.skipped, got.size, got.received) == (False, len(data), len(data))
    assert sha(s3_bytes(other, "big.bin")) == sha(data)
    assert open_uploads(other) == [] and s3_keys(other) == ["big.bin"]
    sent = moto_log()
    parts = [r for r in sent if r[0] == "PUT" and r[1] == other.name and "partNumber" in r[3]]
    assert len(parts) == 4  # 5 + 5 + 5 + 2 MiB
    gets = body_gets(moto_log, s3.name)
    assert sorted(r[4] for r in gets if r[4]) == sorted(  # one range per part but the first
        f"bytes={n * 5 * MiB}-{min(len(data), (n + 1) * 5 * MiB) - 1}" for n in (1, 2, 3)
    )
    assert 1 <= len([r for r in gets if not r[4]]) <= 2  # the first answer (anonymous first)


@pytest.mark.parametrize("transport", [None, "requests"])  # boto3, or the presigned link
def test_an_s3_object_replaced_between_parts_leaves_nothing(s3, other, monkeypatch, transport):
    from dlutils.sources.aws import S3Remote
    from dlutils.sources.s3link import S3LinkRemote

    remote_class = S3Remote if transport is None else S3LinkRemote
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(12 * MiB, seed=3)
    s3.put("moving.bin", data)
    original = remote_class.open
    versions = iter(range(1, 100))

    def replaced_after_each_first_answer(self, start=0, end=None, **kw):
        body = original(self, start, end, **kw)
        if not start and end is None:  # the whole object was asked: it changes at once
            s3.put("moving.bin", blob(12 * MiB, seed=100 + next(versions)))
        return body

    monkeypatch.setattr(remote_class, "open", replaced_after_each_first_answer)
    options = TransferOptions(
        segments=3, segment_threshold=8 * MiB, retries=1, backoff=0, transport=transport
    )
    with pytest.raises(RemoteChangedError, match=f"{s3.uri('moving.bin')}"):
        fetch(s3.uri("moving.bin"), other.uri("moving.bin"), options)
    assert s3_keys(other) == []  # nothing under the final key, no record left behind
    assert open_uploads(other) == []


def test_a_gcs_object_into_memory_checked_by_its_md5(gcs_env, gcs_bucket, memory_fs):
    data = blob(200_000, seed=4)
    resource = upload(gcs_env, gcs_bucket, "d/obj.bin", data)
    link = f"gs://{gcs_bucket}/d/obj.bin"
    got = fetch(link, "memory://bk/p/", TransferOptions())
    assert got.path == "memory://bk/p/obj.bin" and not got.skipped
    assert sha(memory_fs.cat_file("/bk/p/obj.bin")) == sha(data)
    record = json.loads(memory_fs.cat_file("/bk/p/.dlutils/obj.bin.json"))
    assert record["source"] == link and record["verified"] == "md5"
    assert record["version"] == str(resource["generation"])
    assert fetch(link, "memory://bk/p/", TransferOptions()).skipped  # by the metadata
    assert sorted(memory_fs.find("/bk")) == ["/bk/p/.dlutils/obj.bin.json", "/bk/p/obj.bin"]


def test_a_gcs_bucket_into_s3_where_a_lying_object_leaves_nothing(fake_gcs, s3):
    items = {f"d/{i}.bin": blob(3000 + i, seed=i) for i in range(5)}
    for name, data in items.items():
        fake_gcs.put(name, data)
    fake_gcs.put("d/bad.bin", blob(3000, seed=9), served=blob(3000, seed=10))  # same size
    status = Job.backend(f"gs://{fake_gcs.bucket}/d/", s3.uri("g/")).start().wait(60)
    assert (status.finished, status.errors) == (5, 1)
    assert "ChecksumMismatchError" in status.download_errors[0][1]
    assert s3_keys(s3) == sorted(f"g/{i}.bin" for i in range(5))  # nothing under g/bad.bin
    assert open_uploads(s3) == []
    for name, data in items.items():
        assert sha(s3_bytes(s3, "g/" + name[2:])) == sha(data)
    fake_gcs.seen.clear()
    again = Job.backend(f"gs://{fake_gcs.bucket}/d/", s3.uri("g/")).start().wait(60)
    assert (again.finished, again.skipped, again.errors) == (5, 5, 1)
    media = [path for path, query, _ in fake_gcs.seen if query.get("alt") == ["media"]]
    assert media and all(path.endswith("bad.bin") for path in media)  # only the unstored one
    assert again.bytes == 3000


def test_ais_and_hub_objects_into_memory_and_s3(s3, memory_fs, monkeypatch):
    data = blob(5000, seed=5)
    with AisStandIn(page_size=3) as cluster:
        cluster.put("data", "train/00.tgz", data, checksum="md5")
        link = cluster.link("data", "train/00.tgz")
        got = fetch(link, "memory://ais/", TransferOptions())
        assert got.path == "memory://ais/00.tgz"
        assert sha(memory_fs.cat_file("/ais/00.tgz")) == sha(data)
        record = json.loads(memory_fs.cat_file("/ais/.dlutils/00.tgz.json"))
        assert record["verified"] == "md5" and record["source"] == link
        cluster.target.clear_log()
        assert fetch(link, "memory://ais/", TransferOptions()).skipped
        assert [r.method for r in cluster.target.requests] == ["HEAD"]
        cluster.put("data", "train/01.tgz", data, checksum="md5", value="0" * 32)  # lies
        with pytest.raises(dlutils.errors.ChecksumMismatchError):
            fetch(cluster.link("data", "train/01.tgz"), "memory://ais/", TransferOptions())
        assert not memory_fs.exists("/ais/01.tgz")
    files = {"README.md": b"# tiny\n", "data/train.csv": b"a,b\n" * 5000}
    with HubStandIn(page_size=2, lfs_threshold=64) as hub:
        hub.add_repo("acme/tiny", files, repo_type="dataset")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        status = Job.hf(s3.uri("hub/"), dataset="acme/tiny").start().wait(60)
        assert (status.finished, status.errors) == (2, 0), status.download_errors
        for name, content in files.items():
            assert sha(s3_bytes(s3, "hub/" + name)) == sha(content)
        meta = s3.client.head_object(Bucket=s3.name, Key="hub/data/train.csv")["Metadata"]
        assert json.loads(meta["dlutils"])["verified"] == "sha256"  # the LFS sha256 held
        got = hf_download("acme/tiny", local_dir="memory://pure/", repo_type="dataset")
        assert sorted(got) == ["memory://pure/README.md", "memory://pure/data/train.csv"]
        assert memory_fs.cat_file("/pure/data/train.csv") == files["data/train.csv"]
        one = hf_download("acme/tiny", "README.md", "memory://one/", repo_type="dataset")
        assert one == "memory://one/README.md" and memory_fs.cat_file("/one/README.md")
        hub.storage.clear_log()
        again = Job.hf(s3.uri("hub/"), dataset="acme/tiny").start().wait(60)
        assert (again.finished, again.skipped, again.bytes) == (2, 2, 0)
        assert hub.storage.requests == []  # the listing decided: no body


def test_a_backend_job_s3_to_s3_rerun_and_sync(s3, other, moto_log):
    items = {f"train/{i:02d}.bin": blob(1000 + i, seed=i) for i in range(6)}
    s3.put_many(items)
    s3.put("train/notes.txt", b"notes")
    other.put("mirror/foreign.bin", b"put here by hand")
    other.put("mirror/extra.bin", b"mine, not dlutils's")
    dest = other.uri("mirror/")
    status = Job.backend(s3.uri("train/"), dest, suffix=".bin").start().wait(60)
    assert (status.finished, status.errors, status.skipped) == (6, 0, 0), status.download_errors
    for key, data in items.items():
        assert sha(s3_bytes(other, "mirror/" + key[6:])) == sha(data)
    moto_log.reset()
    again = Job.backend(s3.uri("train/"), dest, suffix=".bin", sync=True).start().wait(60)
    assert (again.finished, again.skipped, again.deleted, again.bytes) == (6, 6, 0, 0)
    assert body_gets(moto_log, s3.name) == []  # the listing decided each one
    assert [r for r in moto_log() if r[0] == "HEAD" and r[1] == s3.name] == []
    s3.client.delete_object(Bucket=s3.name, Key="train/03.bin")
    synced = Job.backend(s3.uri("train/"), dest, suffix=".bin", sync=True).start().wait(60)
    assert (synced.deleted, synced.errors) == (1, 0)
    left = s3_keys(other)
    assert "mirror/03.bin" not in left
    assert {"mirror/foreign.bin", "mirror/extra.bin", "mirror/05.bin"} <= set(left)


def test_storage_options_reach_s3fs_and_never_show(s3, moto_server, monkeypatch, caplog):
    secret = "SECRET-STORE-KEY-4242"
    options = {"endpoint_url": moto_server.url, "key": "testing", "secret": secret}
    data = blob(4000, seed=6)
    s3.put("o.bin", data)
    # with no endpoint in the environment, only storage_options lead s3fs to moto
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    caplog.set_level(logging.DEBUG)
    src = TransferOptions(endpoint_url=moto_server.url)
    job = Job.single(s3.uri("o.bin"), s3.uri("dst/"), endpoint_url=moto_server.url,
                     storage_options=options)  # fmt: skip
    status = job.start().wait(60)
    assert (status.finished, status.errors) == (1, 0), status.download_errors
    assert sha(s3_bytes(s3, "dst/o.bin")) == sha(data)
    absent = f"s3://{s3.name}-absent/p/"
    with pytest.raises(InvalidInputError) as caught:
        Job.single(s3.uri("o.bin"), absent, storage_options=options).start()
    shown = [
        str(caught.value),
        repr(caught.value),
        "".join(traceback.format_exception(caught.value)),
        repr(job._opts),
        repr(job._opts.transfer()),
        job.description,
        json.dumps(status.to_dict(), default=str),
        caplog.text,
    ]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:  # it travels to other processes,
        check_sendable(job._opts.transfer(), pool)  # where no AWS_ENDPOINT_URL is set either
        far = Job.backend(s3.uri(""), s3.uri("far/"), prefix="o.", executor=pool,
                          endpoint_url=moto_server.url, storage_options=options)  # fmt: skip
        done = far.start().wait(120)
    assert (done.finished, done.errors) == (1, 0), done.download_errors
    assert sha(s3_bytes(s3, "far/o.bin")) == sha(data)
    shown.append(json.dumps(done.to_dict(), default=str) + far.description + caplog.text)
    assert all(secret not in text for text in shown)
    assert pickle.loads(pickle.dumps(src.replace(storage_options=options))).storage_options == (
        options
    )
    with pytest.raises(InvalidInputError, match="storage_options .* is not valid") as bad:
        Job.single(s3.uri("o.bin"), s3.uri("dst/"), storage_options=[("secret", secret)])
    assert secret not in str(bad.value)


def test_the_cli_copies_a_bucket_prefix_and_one_object_into_s3(s3, other, tmp_path):
    items = {f"train/{i}.bin": blob(500 + i, seed=i) for i in range(3)}
    s3.put_many(items)
    env = {**os.environ, "DLUTILS_HOME": str(tmp_path / "home")}  # moto's endpoint: inherited

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "dlutils", "download", *args]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    proc = cli(s3.uri("train/"), other.uri("copy/"), "--sync", "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "Done: 3 files downloaded, skipped: 0, errors: 0" in proc.stdout
    for key, data in items.items():
        assert sha(s3_bytes(other, "copy/" + key[6:])) == sha(data)
    one = cli(s3.uri("train/1.bin"), other.uri("one/renamed.bin"), "--wait")
    assert one.returncode == 0, one.stderr
    assert sha(s3_bytes(other, "one/renamed.bin")) == sha(items["train/1.bin"])
    assert os.listdir(tmp_path) == ["home"]  # no local folder named 's3:'
