"""Every source on the fast path: S3, GCS, AIS and Hub objects over libcurl and requests.

The same objects through each transport give sha256-identical files; the integrity rules
(ETag/version pinning, sizes, checksums, where credentials go) hold on both; a presigned
link, which is a credential, never shows in a message, a log or a job's status.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import socket
import threading
import time
from urllib.parse import parse_qs

import pytest
import requests
from conftest import list_files as files
from conftest import make_random_bytes
from servers_gcs import FakeGcs, fake_gcs_fixture  # noqa: F401 - fixtures
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401 - fixtures

import dlutils
from dlutils import Job, State
from dlutils import transfer as transfer_module
from dlutils.freshness import Manifest
from dlutils.localserver import reset_after, stall, status
from dlutils.sandbox.aistore import AisStandIn
from dlutils.sandbox.hf_hub import HubStandIn
from dlutils.sources import aws, gcs
from dlutils.sources.ais import fetch_ais
from dlutils.sources.aws import aws_download, fetch_s3
from dlutils.sources.gcs import fetch_gcs
from dlutils.sources.hf import fetch_hf
from dlutils.transfer import CHUNK_SIZE, AbortEvent, TransferOptions

pytest.importorskip("pycurl")
boto3 = pytest.importorskip("boto3")
ClientError = pytest.importorskip("botocore.exceptions").ClientError

MiB = 1 << 20
TOKEN = "hf_fastsourcestoken0123456789"
#: Query parameters of a presigned link whose values are credentials.
SIGNED_PARAMS = ("Signature", "X-Amz-Signature", "X-Amz-Credential", "AWSAccessKeyId")


def sha(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    """No bucket remembered as private by another test: each starts anonymous."""
    monkeypatch.setattr(aws, "_CLIENTS", aws._Clients())


# --------------------------------------------------------------------------- S3


@pytest.mark.parametrize("transport", [None, "requests", "curl"])
def test_s3_objects_are_sha256_identical_on_every_path(s3, tmp_path, transport, monkeypatch, tune):
    tune(min_segment_size=256 * 1024)
    small, large = make_random_bytes(70_000, seed=1), make_random_bytes(3 * MiB, seed=2)
    s3.put("d/small.bin", small)
    s3.put("d/large bin #1.bin", large)
    for key, data in (("d/small.bin", small), ("d/large bin #1.bin", large)):
        path = aws_download(
            s3.uri(key), local_filepath=tmp_path, transport=transport, segment_threshold=MiB
        )
        assert sha(path) == hashlib.sha256(data).hexdigest()
    assert files(tmp_path) == ["large bin #1.bin", "small.bin"]
    record = Manifest(tmp_path).get(str(tmp_path / "small.bin"))
    assert record.etag == f'"{hashlib.md5(small).hexdigest()}"' and record.size == len(small)


@pytest.mark.parametrize("transport", [None, "curl"])
def test_s3_a_missing_key_is_the_same_client_error_on_both_paths(s3, tmp_path, transport):
    with pytest.raises(ClientError, match=rf"NoSuchKey.*\(for s3://{s3.name}/gone\.bin\)") as info:
        fetch_s3(s3.uri("gone.bin"), tmp_path, TransferOptions(transport=transport))
    assert type(info.value).__name__ == "NoSuchKey"  # the class boto3 models for the code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert files(tmp_path) == []


@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_s3_a_part_of_an_older_version_restarts_on_both_transports(s3, tmp_path, transport):
    old = make_random_bytes(2 * CHUNK_SIZE, seed=3)
    old_etag = s3.put("obj.bin", old)["ETag"]
    new = make_random_bytes(2 * CHUNK_SIZE, seed=4)
    s3.put("obj.bin", new)  # replaced since the .part was begun
    target = tmp_path / "obj.bin"
    (tmp_path / "obj.bin.part").write_bytes(old[:CHUNK_SIZE])
    with Manifest(tmp_path) as manifest:
        manifest.put_partial(os.path.abspath(target), {"validator": old_etag, "total": len(old)})
    pauses: list[float] = []
    fetched = fetch_s3(
        s3.uri("obj.bin"), target, TransferOptions(transport=transport, sleep=pauses.append)
    )
    assert sha(target) == hashlib.sha256(new).hexdigest() and fetched.received == len(new)
    assert pauses == [] and not (tmp_path / "obj.bin.part").exists()


def test_s3_the_pinned_version_is_in_the_signed_link(s3, tmp_path):
    s3.enable_versioning()
    first = make_random_bytes(5000, seed=5)
    version = s3.put("v.bin", first)["VersionId"]
    s3.put("v.bin", make_random_bytes(5000, seed=6))  # a newer version, same size
    remote = aws.S3Remote(s3.uri("v.bin"), version=version)
    from dlutils.sources.s3link import S3LinkRemote

    link = S3LinkRemote(remote, "curl")
    body = link.open()
    data = b"".join(iter(lambda: body.read(1 << 16), b""))
    body.close()
    assert data == first  # the version asked for, not the newest


@pytest.fixture
def faulty(http_server, moto_server):  # moto_server: for its fake credentials only
    """An S3-like endpoint on the local server, fetched through signed links over libcurl."""

    def fetch(key: str, dest, options: TransferOptions | None = None):
        options = options or TransferOptions()
        sleep = options.sleep or (lambda seconds: None)
        options = options.replace(endpoint_url=http_server.url, transport="curl", sleep=sleep)
        return fetch_s3(f"s3://bkt/{key}", dest, options)

    return http_server, fetch


def test_s3_anonymous_first_then_a_signed_link_over_curl(faulty, tmp_path):
    server, fetch = faulty
    server.put("bkt/a.bin", b"abc")
    server.add_fault("bkt/a.bin", status(403))  # anonymous access refused
    fetch("a.bin", tmp_path)
    fetch("a.bin", tmp_path / "again.bin")  # the bucket is known private: signed at once
    queries = [parse_qs(r.query) for r in server.requests_for("/bkt/a.bin")]
    signed = ["Signature" in q or "X-Amz-Signature" in q for q in queries]
    assert signed == [False, True, True]
    assert (tmp_path / "a.bin").read_bytes() == b"abc" == (tmp_path / "again.bin").read_bytes()


def test_s3_forbidden_twice_is_a_client_error_never_retried(faulty, tmp_path):
    server, fetch = faulty
    server.put("bkt/a.bin", b"abc")
    for _ in range(3):
        server.add_fault("bkt/a.bin", status(403))
    with pytest.raises(ClientError, match=r"\(403\).*Forbidden.*s3://bkt/a\.bin"):
        fetch("a.bin", tmp_path)
    assert len(server.requests_for("/bkt/a.bin")) == 2 and files(tmp_path) == []


def test_s3_a_broken_body_resumes_with_if_match_over_curl(faulty, tmp_path):
    server, fetch = faulty
    data = make_random_bytes(3 * MiB, seed=7)
    server.put("bkt/b.bin", data)
    server.add_fault("bkt/b.bin", reset_after(CHUNK_SIZE + 100))
    fetch("b.bin", tmp_path, TransferOptions(aws_profile="dlutils-test", segments=1))
    assert sha(tmp_path / "b.bin") == hashlib.sha256(data).hexdigest()
    second = server.requests_for("/bkt/b.bin")[1]
    assert second.range.startswith("bytes=") and second.range != "bytes=0-"
    assert second.headers["If-Match"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_s3_abort_interrupts_a_blocked_read_over_curl(faulty, tmp_path):
    server, fetch = faulty
    data = make_random_bytes(3 * MiB, seed=15)
    server.put("bkt/s.bin", data)
    # Silent for ten minutes after 2 MiB: only abort can end this download (a broken
    # interrupt shows as a pytest-timeout failure, never as a timing assertion).
    server.add_fault("bkt/s.bin", stall(600, after_bytes=2 * MiB))
    abort, part = AbortEvent(), tmp_path / "s.bin.part"

    def abort_when_blocked():
        while not (part.exists() and part.stat().st_size >= 2 * MiB):
            time.sleep(0.01)
        abort.set()

    watcher = threading.Thread(target=abort_when_blocked)
    watcher.start()
    with pytest.raises(dlutils.DownloadAborted):
        fetch(
            "s.bin",
            tmp_path,
            TransferOptions(abort=abort, timeout=600, aws_profile="dlutils-test", segments=1),
        )
    watcher.join()
    assert part.stat().st_size == 2 * MiB
    fetch("s.bin", tmp_path, TransferOptions(aws_profile="dlutils-test"))
    assert sha(tmp_path / "s.bin") == hashlib.sha256(data).hexdigest()


def test_s3_a_presigned_link_never_shows_in_messages_logs_or_status(faulty, tmp_path, caplog):
    server, fetch = faulty
    server.put("bkt/c.bin", make_random_bytes(3 * MiB, seed=8))
    server.add_fault("bkt/c.bin", reset_after(1000))
    caplog.set_level(logging.DEBUG, logger="dlutils")
    with pytest.raises(dlutils.DownloadError) as broken:  # the link is in libcurl's message
        fetch("c.bin", tmp_path, TransferOptions(aws_profile="dlutils-test", retries=0, segments=1))
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(requests.ConnectionError) as refused:
        fetch_s3(
            "s3://bkt/c.bin",
            tmp_path,
            TransferOptions(
                endpoint_url=closed, aws_profile="dlutils-test", transport="curl", retries=0
            ),
        )
    job = Job.single(
        "s3://bkt/c.bin", tmp_path / "job", endpoint_url=closed, aws_profile="dlutils-test"
    ).start()
    state = job.wait(60)
    assert state.state is State.FINISHED and state.errors == 1
    seen = [parse_qs(r.query) for r in server.requests_for("/bkt/c.bin")]
    secrets = {v for q in seen for name in SIGNED_PARAMS for v in q.get(name, ())}
    assert secrets  # signed links were sent...
    told = "\n".join(
        [str(broken.value), str(refused.value), caplog.text, repr(state.download_errors)]
    )
    assert "the connection broke" in told and "127.0.0.1" in repr(state.download_errors)
    for secret in secrets | {"profiled"}:  # ...and no credential of theirs was ever shown
        assert secret not in told
    assert not re.search(r"(Signature|Credential|AccessKeyId)=(?!REDACTED)", told)


def test_s3_backend_job_over_curl_and_requests_gives_the_same_files(s3, tmp_path, monkeypatch):
    contents = {f"set/{i:03d}.bin": make_random_bytes(4096 + i, seed=i) for i in range(30)}
    s3.put_many(contents)
    through_botocore = []
    real_open = aws.S3Remote.open
    monkeypatch.setattr(
        aws.S3Remote,
        "open",
        lambda self, *a, **k: through_botocore.append(1) or real_open(self, *a, **k),
    )
    digests = {}
    for transport in ("curl", "requests"):
        dest = tmp_path / transport
        state = Job.backend(s3.uri("set/"), dest, transport=transport).start().wait(60)
        assert (state.state, state.finished, state.errors) == (State.FINISHED, 30, 0), state
        digests[transport] = {name: sha(dest / name) for name in files(dest)}
    expected = {k[4:]: hashlib.sha256(v).hexdigest() for k, v in contents.items()}
    assert digests["curl"] == digests["requests"] == expected
    assert through_botocore == []  # every object came through a signed link


# --------------------------------------------------------------------------- GCS


@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_gcs_media_over_both_transports_bearer_on_every_request(
    fake_gcs: FakeGcs, tmp_path, transport, monkeypatch, tune
):
    monkeypatch.setattr(gcs, "_ADC", gcs._Adc())
    tune(min_segment_size=256 * 1024)
    fake_gcs.token = "ya29.fastsources-secret"
    small, large = make_random_bytes(1000, seed=9), make_random_bytes(2 * MiB, seed=10)
    fake_gcs.put("a/small.bin", small)
    fake_gcs.put("a/large.bin", large)
    for name, data in (("a/small.bin", small), ("a/large.bin", large)):
        fetched = fetch_gcs(
            fake_gcs.uri(name),
            tmp_path,
            TransferOptions(token=fake_gcs.token, transport=transport, segment_threshold=MiB),
        )
        assert sha(fetched.path) == hashlib.sha256(data).hexdigest()
    media = [(q, h) for path, q, h in fake_gcs.seen if q.get("alt") == ["media"]]
    assert len(media) >= 3  # the large object came in ranges
    assert all(h.get("Authorization") == f"Bearer {fake_gcs.token}" for _, h in media)
    pinned = {q["ifGenerationMatch"][0] for q, _ in media}
    assert len(pinned) == 2  # every request pinned to its object's generation


def test_gcs_a_replaced_object_is_looked_up_again_over_curl(fake_gcs: FakeGcs, tmp_path):
    data = make_random_bytes(5000, seed=11)
    fake_gcs.put("r.bin", data)
    listed = fake_gcs.resource("r.bin")
    fake_gcs.put("r.bin", data[::-1])  # replaced after the listing: a new generation
    attrs = gcs._attrs(fake_gcs.bucket, "r.bin", listed)
    fetched = fetch_gcs(
        fake_gcs.uri("r.bin"), tmp_path, TransferOptions(remote_attrs=attrs, transport="curl")
    )
    assert sha(fetched.path) == hashlib.sha256(data[::-1]).hexdigest()
    statuses = [q.get("alt") for _, q, _ in fake_gcs.seen]
    assert statuses == [["media"], None, ["media"]]  # 412, metadata, media


# --------------------------------------------------------------------------- AIS


@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_ais_objects_through_the_target_redirect_on_both_transports(tmp_path, transport):
    data = make_random_bytes(200_000, seed=12)
    with AisStandIn() as cluster:
        cluster.put("bkt", "d/x.bin", data, checksum="md5")
        fetched = fetch_ais(
            cluster.link("bkt", "d/x.bin"), tmp_path, TransferOptions(transport=transport)
        )
        assert sha(fetched.path) == hashlib.sha256(data).hexdigest()
        assert [r.method for r in cluster.object_requests()] == ["HEAD", "GET"]
        cluster.put("bkt", "d/x.bin", data[::-1], checksum="md5", value="0" * 32)
        with pytest.raises(dlutils.ChecksumMismatchError):  # the cluster's md5 is checked
            fetch_ais(
                cluster.link("bkt", "d/x.bin"),
                tmp_path / "y.bin",
                TransferOptions(transport=transport),
            )
        assert not (tmp_path / "y.bin").exists()


# --------------------------------------------------------------------------- HF


@pytest.fixture
def hub(monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with HubStandIn(page_size=3, lfs_threshold=64) as stand_in:
        stand_in.files = {"notes.txt": b"notes\n", "w.bin": make_random_bytes(300_000, seed=13)}
        stand_in.add_repo("acme/secret", stand_in.files, private=True, token=TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_hf_the_token_reaches_the_hub_never_the_storage_host(hub, tmp_path, transport):
    for name, data in hub.files.items():
        link = f"hf://datasets/acme/secret/{name}"
        fetched = fetch_hf(
            link,
            tmp_path,
            TransferOptions(token=TOKEN, headers={"X-Trace": "t1"}, transport=transport),
        )
        assert sha(fetched.path) == hashlib.sha256(data).hexdigest()
    assert hub.requests and all(
        r.headers.get("Authorization") == f"Bearer {TOKEN}" and r.headers.get("X-Trace")
        for r in hub.requests
    )
    assert hub.storage.requests  # w.bin came from the storage host...
    for request in hub.storage.requests:  # ...which saw neither the token nor headers=
        assert all(TOKEN not in value for value in request.headers.values())
        assert "Authorization" not in request.headers and "X-Trace" not in request.headers


def test_hf_segments_over_curl_ask_the_hub_once(hub, tmp_path, monkeypatch, tune):
    tune(min_segment_size=64 * 1024)
    fetched = fetch_hf(
        "hf://datasets/acme/secret/w.bin",
        tmp_path,
        TransferOptions(token=TOKEN, transport="curl", segments=4, segment_threshold=128 * 1024),
    )
    assert sha(fetched.path) == hashlib.sha256(hub.files["w.bin"]).hexdigest()
    assert len([r for r in hub.storage.requests if r.range]) >= 2  # in parallel ranges...
    assert [r.method for r in hub.requests_to("resolve")] == ["HEAD"]  # ...the HEAD's link


def test_hf_an_expired_storage_link_is_asked_for_again_over_curl(hub, tmp_path):
    blob = f"lfs/{hashlib.sha256(hub.files['w.bin']).hexdigest()}"
    hub.storage.add_fault(blob, status(403))  # the link the HEAD gave has expired
    fetch_hf(
        "hf://datasets/acme/secret/w.bin", tmp_path, TransferOptions(token=TOKEN, transport="curl")
    )
    assert [r.method for r in hub.requests_to("resolve")] == ["HEAD", "GET"]
    assert sha(tmp_path / "w.bin") == hashlib.sha256(hub.files["w.bin"]).hexdigest()


# --------------------------------------------------------------------------- jobs


def test_a_job_passes_its_transport_to_every_scheme(hub, tmp_path, monkeypatch):
    seen = []
    real = transfer_module.download

    def spy(remote, *args, **kwargs):
        seen.append(type(remote).__name__)
        return real(remote, *args, **kwargs)

    import importlib

    hf_module = importlib.import_module("dlutils.sources.hf.download")  # where fetch_hf lives
    monkeypatch.setattr(hf_module, "download", spy)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    state = Job.single("hf://datasets/acme/secret/w.bin", tmp_path).start().wait(60)
    assert (state.state, state.errors) == (State.FINISHED, 0), state
    assert seen == ["_CurlHops"]  # a job's default transport, "auto", reached the source


def test_s3_a_complete_part_is_placed_without_fetching_it_again_over_curl(s3, tmp_path):
    data = make_random_bytes(3 * CHUNK_SIZE, seed=14)
    etag = s3.put("done.bin", data)["ETag"]
    target = tmp_path / "done.bin"
    (tmp_path / "done.bin.part").write_bytes(data)  # every byte is here, not yet placed
    with Manifest(tmp_path) as manifest:
        manifest.put_partial(os.path.abspath(target), {"validator": etag, "total": len(data)})
    fetched = fetch_s3(s3.uri("done.bin"), target, TransferOptions(transport="curl"))
    assert sha(target) == hashlib.sha256(data).hexdigest() and fetched.received == 0


@pytest.mark.parametrize("transport", ["requests", "curl"])
def test_s3_a_wrong_checksum_places_nothing_on_both_transports(s3, tmp_path, transport):
    data = make_random_bytes(100_000, seed=16)
    s3.put("k.bin", data)
    wrong = "sha256:" + hashlib.sha256(data + b"x").hexdigest()
    with pytest.raises(dlutils.ChecksumMismatchError, match="k.bin"):
        fetch_s3(
            s3.uri("k.bin"),
            tmp_path,
            TransferOptions(transport=transport, checksum=wrong, retries=0),
        )
    assert files(tmp_path) == []
    right = "sha256:" + hashlib.sha256(data).hexdigest()
    fetch_s3(s3.uri("k.bin"), tmp_path, TransferOptions(transport=transport, checksum=right))
    assert sha(tmp_path / "k.bin") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("transport", [None, "requests", "curl"])
def test_s3_an_object_stored_gzipped_is_kept_as_stored_on_every_path(s3, tmp_path, transport, tune):
    # Uploaded with ContentEncoding=gzip, S3 serves the stored bytes with that header:
    # they are the object (its size and ETag say so), as boto3, aws s3 cp and s5cmd keep it.
    # Before: the http transports decoded them, and a re-run fetched the object again
    # every time (the file's size never matched the listing's).
    tune(min_segment_size=256 * 1024)
    stored = gzip.compress(make_random_bytes(1 << 20, seed=5) * 3, mtime=0)
    for key in ("g/small.json", "g/large.bin"):
        body = stored[:5000] if key == "g/small.json" else stored
        s3.client.put_object(Bucket=s3.name, Key=key, Body=body, ContentEncoding="gzip")
    for key in ("g/small.json", "g/large.bin"):
        want = stored[:5000] if key == "g/small.json" else stored
        path = aws_download(
            s3.uri(key), local_filepath=tmp_path / "one", transport=transport,
            segment_threshold=MiB,
        )  # fmt: skip
        assert sha(path) == hashlib.sha256(want).hexdigest(), key
    if transport is None:
        return
    dest = tmp_path / "job"
    first = Job.backend(s3.uri("g/"), dest, transport=transport).start().wait(60)
    assert (first.finished, first.skipped, first.errors) == (2, 0, 0), first
    assert sha(dest / "large.bin") == hashlib.sha256(stored).hexdigest()
    again = Job.backend(s3.uri("g/"), dest, transport=transport).start().wait(60)
    assert (again.finished, again.skipped, again.errors) == (2, 2, 0), again
