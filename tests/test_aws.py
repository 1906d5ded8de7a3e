"""The S3 source against moto's real server (and, for faults, the local HTTP server)."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import list_files as files
from conftest import make_random_bytes
from faultproxy import FaultProxy
from servers_s3 import (  # noqa: F401 - fixtures
    TEST_PROFILE,
    moto_server_fixture,
    s3_fixture,
    s3_module_fixture,
)

import dlutils
from dlutils import (
    CacheMismatchWarning,
    DownloadAborted,
    InvalidInputError,
    RemoteChangedError,
    UnsafePathError,
)
from dlutils.freshness import Manifest, ObjectAttrs
from dlutils.localserver import reset_after, stall, status
from dlutils.sources import aws
from dlutils.sources.aws import aws_download, fetch_s3, list_s3
from dlutils.transfer import CHUNK_SIZE, AbortEvent, TransferOptions

boto3 = pytest.importorskip("boto3")
ClientError = pytest.importorskip("botocore.exceptions").ClientError

MiB = 1 << 20


@dataclass
class Call:
    operation: str
    params: dict[str, Any]
    signed: bool


@pytest.fixture
def calls(monkeypatch) -> list[Call]:
    """Every S3 request dlutils makes from now on, through botocore's event hooks."""
    fresh = aws._Clients()
    monkeypatch.setattr(aws, "_CLIENTS", fresh)
    log: list[Call] = []
    create = fresh._create

    def recording(session, options, signed):
        client = create(session, options, signed)

        def record(params, model, **_):
            log.append(Call(model.name, dict(params), signed))

        client.meta.events.register("provide-client-params.s3", record)
        return client

    monkeypatch.setattr(fresh, "_create", recording)
    return log


def gets(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.operation == "GetObject"]


# --------------------------------------------------------------------------- pyvo-style calls


def test_by_uri_to_a_given_path(s3, tmp_path):
    s3.put("data/table.csv", b"a,b\n1,2\n")
    target = tmp_path / "sub" / "out.csv"
    assert aws_download(s3.uri("data/table.csv"), local_filepath=target) == os.fspath(target)
    assert target.read_bytes() == b"a,b\n1,2\n"


def test_by_bucket_and_key_to_the_current_folder(s3, tmp_path, monkeypatch):
    s3.put("data/table.csv", b"a,b\n")
    monkeypatch.chdir(tmp_path)
    assert aws_download(bucket_name=s3.name, key="data/table.csv") == "table.csv"
    assert (tmp_path / "table.csv").read_bytes() == b"a,b\n"


def test_a_folder_means_the_key_name_inside_it(s3, tmp_path):
    s3.put("deep/er/x.fits", b"FITS")
    assert aws_download(s3.uri("deep/er/x.fits"), local_filepath=tmp_path) == os.path.join(
        tmp_path, "x.fits"
    )
    assert files(tmp_path) == ["x.fits"]


def test_anonymous_first_then_credentials_remembered_per_bucket(s3, tmp_path, calls):
    s3.put("a.bin", b"a")
    s3.put("b.bin", b"b")
    fetch_s3(s3.uri("a.bin"), tmp_path / "a.bin")
    assert [(c.operation, c.signed) for c in calls] == [("GetObject", False), ("GetObject", True)]
    calls.clear()
    fetch_s3(s3.uri("b.bin"), tmp_path / "b.bin")
    assert [(c.operation, c.signed) for c in calls] == [("GetObject", True)]


@pytest.mark.parametrize("how", ["profile", "session"])
def test_a_profile_or_a_session_signs_every_request(s3, tmp_path, calls, how):
    s3.put("a.bin", b"abc")
    given = {"aws_profile": TEST_PROFILE} if how == "profile" else {"session": boto3.Session()}
    path = aws_download(s3.uri("a.bin"), local_filepath=tmp_path / "a", **given)
    assert open(path, "rb").read() == b"abc"
    assert [(c.operation, c.signed) for c in calls] == [("GetObject", True)]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="got bucket_name='bkt' and no key"):
        aws_download(bucket_name="bkt")
    with pytest.raises(InvalidInputError, match="got none of them"):
        aws_download()
    with pytest.raises(InvalidInputError, match="names a bucket, not an object"):
        aws_download("s3://bkt/")
    with pytest.raises(InvalidInputError, match="is not a boto3.session.Session"):
        aws_download("s3://bkt/k.bin", local_filepath=tmp_path / "k", session=object())
    with pytest.raises(InvalidInputError, match="not an s3:// link"):
        list_s3("gs://bkt/")  # checked at the call, before any iteration
    with pytest.raises(InvalidInputError, match="bob:REDACTED@") as info:
        aws_download("https://bob:hunter2@example.org/a.csv")
    assert "hunter2" not in str(info.value)
    with pytest.raises(InvalidInputError, match="timeout=-1 is not valid"):
        aws_download("s3://bkt/k.bin", local_filepath=tmp_path / "k", timeout=-1)


def test_missing_boto3_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ImportError, match=r'pip install "dlutils-download\[s3\]"'):
        aws_download("s3://bkt/k.bin", local_filepath=tmp_path / "k.bin")


def test_a_missing_key_raises_client_error_naming_it(s3, tmp_path):
    with pytest.raises(ClientError, match=f"s3://{s3.name}/nope.bin") as info:
        aws_download(s3.uri("nope.bin"), local_filepath=tmp_path / "nope.bin")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    assert files(tmp_path) == []  # no file, no .part


def test_errors_never_show_a_credential(s3, tmp_path, calls):
    secret = "profiled"  # the secret key of TEST_PROFILE
    with pytest.raises(ClientError) as info:
        aws_download(s3.uri("nope.bin"), local_filepath=tmp_path / "x", aws_profile=TEST_PROFILE)
    assert secret not in str(info.value) and "s3://" in str(info.value)


# --------------------------------------------------------------------------- cache and freshness


def test_a_cache_hit_makes_no_get(s3, tmp_path, calls, capsys):
    s3.put("a.bin", b"x" * 1000)
    path = aws_download(s3.uri("a.bin"), local_filepath=tmp_path)
    mtime = os.stat(path).st_mtime_ns
    calls.clear()
    assert aws_download(s3.uri("a.bin"), local_filepath=tmp_path, cache=True, verbose=True) == path
    assert [c.operation for c in calls] == ["HeadObject"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"Found cached file {path}."
    assert os.stat(path).st_mtime_ns == mtime and not os.path.exists(path + ".part")


def test_without_record_the_wrong_size_warns_and_replaces(s3, tmp_path):
    s3.put("a.bin", b"new content")
    (tmp_path / "a.bin").write_bytes(b"old")
    with pytest.warns(CacheMismatchWarning, match="wrong size"):
        fetched = fetch_s3(s3.uri("a.bin"), tmp_path)
    assert not fetched.skipped and (tmp_path / "a.bin").read_bytes() == b"new content"


def test_without_record_the_same_size_is_a_hit_as_pyvo_does(s3, tmp_path):
    s3.put("a.bin", b"abc")
    (tmp_path / "a.bin").write_bytes(b"xyz")
    assert fetch_s3(s3.uri("a.bin"), tmp_path).skipped
    assert (tmp_path / "a.bin").read_bytes() == b"xyz"


def test_a_new_version_is_fetched_again_and_an_unchanged_one_skipped(s3, tmp_path, calls):
    s3.enable_versioning()
    v1 = s3.put("v.txt", b"version one")["VersionId"]
    assert not fetch_s3(s3.uri("v.txt"), tmp_path).skipped
    record = Manifest(tmp_path).get("v.txt")
    assert record.version == v1 and record.source == s3.uri("v.txt")
    assert record.md5 == hashlib.md5(b"version one").hexdigest() and record.etag
    assert fetch_s3(s3.uri("v.txt"), tmp_path).skipped
    v2 = s3.put("v.txt", b"version two!")["VersionId"]
    calls.clear()
    fetched = fetch_s3(s3.uri("v.txt"), tmp_path)
    assert not fetched.skipped and (tmp_path / "v.txt").read_bytes() == b"version two!"
    assert [(c.operation, c.params.get("VersionId")) for c in calls] == [
        ("HeadObject", None),
        ("GetObject", v2),  # pinned to the version the HEAD saw
    ]
    assert Manifest(tmp_path).get("v.txt").version == v2


def test_remote_attrs_from_a_listing_skip_without_any_request(s3, tmp_path, calls):
    s3.put("d/a.bin", b"aaa")
    fetch_s3(s3.uri("d/a.bin"), tmp_path)
    [(key, attrs)] = list(list_s3(s3.uri("d/")))
    calls.clear()
    fetched = fetch_s3(s3.uri(key), tmp_path, TransferOptions(remote_attrs=attrs))
    assert fetched.skipped and calls == []
    s3.put("d/a.bin", b"bbb")  # same size, new content
    [(key, attrs)] = list(list_s3(s3.uri("d/")))
    calls.clear()
    assert not fetch_s3(s3.uri(key), tmp_path, TransferOptions(remote_attrs=attrs)).skipped
    assert [c.operation for c in calls] == ["GetObject"]  # no HEAD
    assert (tmp_path / "a.bin").read_bytes() == b"bbb"


def test_through_the_sources_table(s3, tmp_path):
    from dlutils.sources import fetch, list_objects

    s3.put("t/a.bin", b"abc")
    [(key, attrs)] = list(list_objects(s3.uri("t/")))
    fetched = fetch(
        s3.uri(key), os.fspath(tmp_path / "a.bin"), TransferOptions(remote_attrs=attrs, headers={})
    )
    assert fetched.received == 3 and (tmp_path / "a.bin").read_bytes() == b"abc"


# --------------------------------------------------------------------------- listing


@pytest.fixture(scope="module")
def many(s3_module):
    """1,050 tiny objects under ``many/``, made once for the module."""
    s3_module.put_many({f"many/{i:04d}.bin": b"%d" % i for i in range(1050)})
    return s3_module


def test_listing_follows_every_page_past_1000_keys_and_streams(many, calls):
    listing = list_s3(many.uri("many/"))
    first = next(listing)
    assert first[0] == "many/0000.bin" and len(calls) == 1  # the first page, nothing more yet
    rest = list(listing)
    assert len(rest) == 1049 and rest[-1][0] == "many/1049.bin"
    assert [c.operation for c in calls] == ["ListObjectsV2"] * 2
    assert "ContinuationToken" in calls[1].params


def test_listing_filters_by_prefix_and_suffix_and_skips_folder_markers(s3):
    for key in ["a/1.csv", "a/2.txt", "a/sub/", "a/sub/3.csv", "b/4.csv", "top.csv"]:
        s3.put(key, b"12345")
    assert [k for k, _ in list_s3(s3.uri("a/"), suffix=".csv")] == ["a/1.csv", "a/sub/3.csv"]
    assert [k for k, _ in list_s3(s3.uri("a"), prefix="s")] == ["a/sub/3.csv"]
    assert [k for k, _ in list_s3(f"s3://{s3.name}", suffix=".csv")] == [
        "a/1.csv",
        "a/sub/3.csv",
        "b/4.csv",
        "top.csv",
    ]
    _, attrs = next(list_s3(s3.uri("b/")))
    assert attrs.size == 5 and attrs.source == s3.uri("b/4.csv")
    assert attrs.md5 == hashlib.md5(b"12345").hexdigest() and attrs.etag == f'"{attrs.md5}"'
    assert attrs.last_modified.endswith("GMT")


# --------------------------------------------------------------------------- engine: ranges, resume


def test_a_large_object_comes_in_ranged_gets_pinned_to_its_etag(s3, tmp_path, calls):
    data = make_random_bytes(6 * MiB, seed=3)
    etag = s3.put("big.bin", data)["ETag"]
    md5 = hashlib.md5(data).hexdigest()
    fetched = fetch_s3(
        s3.uri("big.bin"), tmp_path, TransferOptions(segment_threshold=MiB, checksum=f"md5:{md5}")
    )
    assert (tmp_path / "big.bin").read_bytes() == data and fetched.received == len(data)
    ranged = [c.params for c in gets(calls) if "Range" in c.params]
    assert len(ranged) >= 3 and all(p["IfMatch"] == etag for p in ranged)
    assert Manifest(tmp_path).get("big.bin").md5 == md5


class AbortAfterFirstChunk:
    """A limiter that lets one chunk through, then aborts the download."""

    def __init__(self, abort: AbortEvent):
        self.abort, self.chunks = abort, 0

    def acquire(self, nbytes: int, abort=None) -> None:
        self.chunks += 1
        if self.chunks > 1:
            self.abort.set()
            raise DownloadAborted("enough")


def test_an_interrupted_download_resumes_with_a_range_pinned_by_if_match(s3, tmp_path, calls):
    data = make_random_bytes(3 * MiB, seed=4)
    etag = s3.put("r.bin", data)["ETag"]
    abort = AbortEvent()
    with pytest.raises(DownloadAborted, match="kept for resume"):
        fetch_s3(
            s3.uri("r.bin"),
            tmp_path,
            TransferOptions(abort=abort, limiter=AbortAfterFirstChunk(abort)),
        )
    kept = (tmp_path / "r.bin.part").stat().st_size
    assert 0 < kept < len(data) and not (tmp_path / "r.bin").exists()
    calls.clear()
    fetched = fetch_s3(s3.uri("r.bin"), tmp_path)
    assert (tmp_path / "r.bin").read_bytes() == data and fetched.received == len(data) - kept
    assert [c.params.get("Range") for c in gets(calls)] == [f"bytes={kept}-"]
    assert gets(calls)[0].params["IfMatch"] == etag


def test_a_part_of_an_older_object_restarts_from_zero(s3, tmp_path, calls):
    data = make_random_bytes(2 * MiB, seed=5)
    s3.put("c.bin", data)
    (tmp_path / "c.bin.part").write_bytes(b"stale" * 1000)
    Manifest(tmp_path).put_partial("c.bin", {"validator": '"0123"', "total": 3 * MiB})
    fetch_s3(s3.uri("c.bin"), tmp_path)
    assert (tmp_path / "c.bin").read_bytes() == data
    signed = [c.params for c in gets(calls) if c.signed]  # after the anonymous attempt
    assert [(p.get("Range"), p.get("IfMatch")) for p in signed] == [
        ("bytes=5000-", '"0123"'),  # refused: the object changed
        (None, None),  # so all of it
    ]


def test_remote_answers_for_the_engine(s3, tmp_path):
    etag = s3.put("o.bin", b"0123456789")["ETag"]
    remote = aws.S3Remote(s3.uri("o.bin"))
    body = remote.open(4, 6, if_range=etag)
    assert (body.status, body.start, body.end, body.total, body.validator) == (206, 4, 6, 10, etag)
    assert body.read(100) == b"456"
    body.close()
    past_the_end = remote.open(10, if_range=etag)
    assert (past_the_end.status, past_the_end.total) == (416, 10)
    with pytest.raises(RemoteChangedError, match=f"s3://{s3.name}/o.bin changed"):
        remote.open(2, 5, if_range='"another"')
    whole = remote.open(2, if_range='"another"')  # a resume of a changed object: all of it
    assert (whole.status, whole.start, whole.read(100)) == (200, 0, b"0123456789")


def test_a_key_that_climbs_out_is_refused_before_any_request(s3, tmp_path, calls):
    s3.put("../evil.txt", b"evil")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafePathError, match=r"'\.\.' segment"):
        fetch_s3(s3.uri("../evil.txt"), dest)
    assert files(tmp_path) == [] and calls == []
    # Named by the caller, it is fetched where the caller said.
    assert fetch_s3(s3.uri("../evil.txt"), dest / "evil.txt").received == 4
    assert files(tmp_path) == ["dest/evil.txt"]


# --------------------------------------------------------------------------- faults (local server)


@pytest.fixture
def faulty(http_server, moto_server):  # moto_server: for its fake credentials only
    """An S3-like endpoint that misbehaves on request: ``(server, fetch)``."""
    delays: list[float] = []

    def fetch(key: str, dest, options: TransferOptions | None = None):
        options = options or TransferOptions()
        sleep = options.sleep or delays.append
        options = options.replace(endpoint_url=http_server.url, sleep=sleep)
        return fetch_s3(f"s3://bkt/{key}", dest, options)

    fetch.delays = delays
    return http_server, fetch


def test_slow_down_is_retried_after_the_delay_asked(faulty, tmp_path):
    server, fetch = faulty
    server.put("bkt/a.bin", b"abc")
    server.add_fault("bkt/a.bin", status(503, retry_after="7"))
    fetch("a.bin", tmp_path)
    assert fetch.delays == [7.0] and (tmp_path / "a.bin").read_bytes() == b"abc"


def test_forbidden_is_never_retried(faulty, tmp_path):
    server, fetch = faulty
    server.put("bkt/a.bin", b"abc")
    for _ in range(3):
        server.add_fault("bkt/a.bin", status(403))
    with pytest.raises(ClientError, match="s3://bkt/a.bin"):
        fetch("a.bin", tmp_path)
    assert fetch.delays == [] and len(server.requests_for("/bkt/a.bin")) == 2  # anon, signed


def test_a_broken_body_resumes_with_if_match(faulty, tmp_path):
    server, fetch = faulty
    data = make_random_bytes(3 * MiB, seed=6)
    server.put("bkt/b.bin", data)
    server.add_fault("bkt/b.bin", reset_after(CHUNK_SIZE + 100))
    fetch("b.bin", tmp_path)
    assert (tmp_path / "b.bin").read_bytes() == data
    second = server.requests_for("/bkt/b.bin")[1]
    assert second.range.startswith("bytes=") and second.range != "bytes=0-"
    assert second.headers["If-Match"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_abort_interrupts_a_blocked_read(faulty, tmp_path):
    server, fetch = faulty
    data = make_random_bytes(3 * MiB, seed=7)
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
        fetch("s.bin", tmp_path, TransferOptions(abort=abort, timeout=600))
    watcher.join()
    assert part.stat().st_size == 2 * MiB
    fetch("s.bin", tmp_path)
    assert (tmp_path / "s.bin").read_bytes() == data


def test_listed_attrs_are_recorded_for_a_file_of_the_right_size(s3, tmp_path, calls):
    s3.put("l/a.bin", b"abc")
    (tmp_path / "a.bin").write_bytes(b"abc")
    [(key, attrs)] = list(list_s3(s3.uri("l/")))
    calls.clear()
    assert fetch_s3(
        s3.uri(key), tmp_path, TransferOptions(remote_attrs=replace(attrs, source=None))
    ).skipped
    assert calls == [] and Manifest(tmp_path).get("a.bin").source == s3.uri("l/a.bin")
    assert (
        Manifest(tmp_path).get("a.bin").to_dict()
        == ObjectAttrs(size=3, etag=attrs.etag, md5=attrs.md5, source=s3.uri("l/a.bin")).to_dict()
    )


def test_an_empty_object_under_a_key_with_odd_characters(s3, tmp_path):
    key = "dir/table #1?é.csv"
    s3.put(key, b"")
    path = aws_download(s3.uri(key), local_filepath=tmp_path)
    assert path == os.path.join(tmp_path, "table #1?é.csv") and os.path.getsize(path) == 0
    assert fetch_s3(s3.uri(key), tmp_path).skipped


def test_a_part_of_an_older_version_is_dropped_and_the_new_one_fetched(s3, tmp_path):
    # A .part begun on a version that has since been replaced: the resume is pinned to the
    # old ETag, so the new version comes whole and at once, never spliced onto old bytes.
    old = make_random_bytes(2 * CHUNK_SIZE, seed=1)
    old_etag = s3.put("obj.bin", old)["ETag"]
    new = make_random_bytes(2 * CHUNK_SIZE, seed=2)
    s3.put("obj.bin", new)
    target = tmp_path / "obj.bin"
    (tmp_path / "obj.bin.part").write_bytes(old[:CHUNK_SIZE])
    with Manifest(tmp_path) as manifest:
        manifest.put_partial(os.path.abspath(target), {"validator": old_etag, "total": len(old)})
    pauses = []
    aws_download(s3.uri("obj.bin"), local_filepath=target, sleep=pauses.append)
    assert target.read_bytes() == new
    assert pauses == []  # restarted at once, no backoff
    assert not (tmp_path / "obj.bin.part").exists()


def test_a_given_checksum_holds_for_a_same_size_file_already_there(s3, tmp_path):
    s3.put("a.bin", b"abc")
    (tmp_path / "a.bin").write_bytes(b"xyz")  # same size, no record: pyvo would keep it
    digest = "sha256:" + hashlib.sha256(b"abc").hexdigest()
    with pytest.warns(CacheMismatchWarning, match="sha256"):
        fetched = fetch_s3(s3.uri("a.bin"), tmp_path, TransferOptions(checksum=digest))
    assert not fetched.skipped and (tmp_path / "a.bin").read_bytes() == b"abc"
    assert fetch_s3(s3.uri("a.bin"), tmp_path, TransferOptions(checksum=digest)).skipped


def test_cache_verified_checks_the_etag_md5_then_asks_nothing(s3, tmp_path, calls):
    data = make_random_bytes(5000, seed=13)
    s3.put("v/a.bin", data)
    path = aws_download(s3.uri("v/a.bin"), local_filepath=tmp_path, cache="verified")
    assert Manifest(tmp_path).get(path).verified == "md5"  # the single-part ETag, checked
    calls.clear()
    dead = "http://127.0.0.1:1"  # nothing listens there: any request would fail
    again = aws_download(
        s3.uri("v/a.bin"), local_filepath=tmp_path, cache="verified", endpoint_url=dead
    )
    assert again == path and calls == []
    assert hashlib.sha256((tmp_path / "a.bin").read_bytes()).hexdigest() == (
        hashlib.sha256(data).hexdigest()
    )


def test_a_gzip_answer_despite_identity_is_never_placed_as_the_object(s3, moto_server, tmp_path):
    data = b"compressible " * 50_000
    s3.put("k/a.bin", data)
    port = int(moto_server.url.rsplit(":", 1)[1])
    with FaultProxy(types.SimpleNamespace(port=port), rate=0) as proxy:
        proxy.force(f"/{s3.name}/k/a.bin", *["gzip"] * 4)
        try:
            path = aws_download(
                s3.uri("k/a.bin"),
                local_filepath=tmp_path / "a.bin",
                endpoint_url=proxy.url,
                retries=1,
                backoff=0,
            )
        except dlutils.DownloadError:
            return  # refused: fine, nothing placed
        assert hashlib.sha256(Path(path).read_bytes()).digest() == hashlib.sha256(data).digest()


def test_abort_reaches_an_s3_request_waiting_for_its_headers(s3, moto_server, tmp_path):
    s3.put("k/a.bin", b"x" * 1000)
    port = int(moto_server.url.rsplit(":", 1)[1])
    with FaultProxy(types.SimpleNamespace(port=port), rate=0, stall_seconds=60) as proxy:
        path = f"/{s3.name}/k/a.bin"
        proxy.force(path, *["stall_headers"] * 4)
        abort, outcome = AbortEvent(), []

        def run():
            try:
                aws_download(
                    s3.uri("k/a.bin"),
                    local_filepath=tmp_path / "a.bin",
                    endpoint_url=proxy.url,
                    abort=abort,
                )
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while not [e for e in proxy.log if e.fault == "stall_headers"]:
            time.sleep(0.02)
        abort.set()
        worker.join(10)  # without the fix: 60 s, the stall
        assert not worker.is_alive(), "the S3 request waiting for its headers was not aborted"
    assert [type(e) for e in outcome] == [dlutils.DownloadAborted]
    assert not (tmp_path / "a.bin").exists()
