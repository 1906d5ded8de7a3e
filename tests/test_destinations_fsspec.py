"""Issue 14 item 2: objects streamed into an fsspec store (memory://, s3:// on moto), file://.

An object appears under its final key only verified and complete; a lying server leaves
nothing under it and no open multipart upload; a killed upload resumes from the parts
already stored; a re-run with everything current fetches no body.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401 - fixtures
from stores_support import (
    blob,
    memory_fs_fixture,  # noqa: F401 - fixture
    open_uploads,
    s3_bytes,
    s3_keys,
)

import dlutils
from dlutils import CacheMismatchWarning, InvalidInputError, Job
from dlutils.errors import (
    ChecksumMismatchError,
    IncompleteDownloadError,
    SizeMismatchError,
    UnsafePathError,
)
from dlutils.localserver import ignore_if_range, stall, truncate
from dlutils.sources.aws import aws_download
from dlutils.sources.http import http_download
from dlutils.stores import fetch_to_store, objects

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body_gets(server) -> list:
    return [r for r in server.requests if r.method == "GET" and r.status in (200, 206)]


def test_http_download_into_memory_s3_and_file_urls(http_server, s3, memory_fs, tmp_path):
    data = blob(300_000)
    http_server.put("d/table.bin", data)
    link = http_server.url_for("d/table.bin")
    assert http_download(link, "memory://bk/p/") == "memory://bk/p/table.bin"
    assert sha(memory_fs.cat_file("/bk/p/table.bin")) == sha(data)
    assert http_download(link, s3.uri("p/")) == s3.uri("p/table.bin")
    assert sha(s3_bytes(s3, "p/table.bin")) == sha(data)
    assert s3_keys(s3) == ["p/table.bin"]  # the record is the object's metadata
    got = http_download(link, (tmp_path / "out").as_uri() + "/")
    assert got == str(tmp_path / "out" / "table.bin")
    assert sha((tmp_path / "out" / "table.bin").read_bytes()) == sha(data)
    s3.put("src/k.bin", data)  # a source that writes local files only takes file:// too
    got = aws_download(s3.uri("src/k.bin"), local_filepath=(tmp_path / "aws").as_uri() + "/")
    assert got == str(tmp_path / "aws" / "k.bin")
    assert sha((tmp_path / "aws" / "k.bin").read_bytes()) == sha(data)
    status = dlutils.download(link, (tmp_path / "job").as_uri()).wait(60)
    assert (status.finished, status.errors) == (1, 0)
    assert sha((tmp_path / "job" / "table.bin").read_bytes()) == sha(data)


# 500 objects take ~8 s on moto here (two store calls each): the soak run has them
@pytest.mark.parametrize("count", [200, pytest.param(500, marks=pytest.mark.soak)])
def test_a_range_job_into_an_s3_prefix_and_a_rerun_fetches_no_body(http_server, s3, count):
    files = {f"d/f{i:03d}.bin": blob(1000 + i, seed=i) for i in range(count)}
    for name, data in files.items():
        http_server.put(name, data)
    template = http_server.url + f"/d/f{{000..{count - 1:03d}}}.bin"
    status = dlutils.download(template, s3.uri("shards/"), connections=8).wait(120)
    assert (status.finished, status.errors, status.skipped) == (count, 0, 0)
    assert status.bytes == sum(map(len, files.values()))
    assert s3_keys(s3) == sorted(f"shards/{name[2:]}" for name in files)
    for name in ("d/f000.bin", "d/f123.bin", f"d/f{count - 1}.bin"):
        assert sha(s3_bytes(s3, "shards/" + name[2:])) == sha(files[name])
    http_server.clear_log()
    again = dlutils.range_download(template, s3.uri("shards/"), connections=8)
    assert again == [s3.uri("shards/" + name[2:]) for name in files]
    assert body_gets(http_server) == []  # asked, answered 304: no body
    assert {r.status for r in http_server.requests} == {304}


def test_a_job_into_memory_and_a_given_checksum_trusted_from_the_record(http_server, memory_fs):
    data = blob(5000)
    http_server.put("x.bin", data)
    link = http_server.url_for("x.bin")
    job = Job.multi({"a/x.bin": link}, "memory://bk/").start()
    assert job.wait(60).finished == 1
    assert sha(memory_fs.cat_file("/bk/a/x.bin")) == sha(data)
    given = "sha256:" + sha(data)
    assert http_download(link, "memory://bk/y.bin", checksum=given) == "memory://bk/y.bin"
    http_server.clear_log()
    # the record holds the checksum verified when it was stored: no request at all
    assert http_download(link, "memory://bk/y.bin", checksum=given) == "memory://bk/y.bin"
    assert http_server.requests == []


def test_a_lying_server_leaves_no_object_and_no_open_upload(http_server, s3, monkeypatch):
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(12 * MiB)
    http_server.put("big.bin", data)
    link = http_server.url_for("big.bin")
    http_server.add_fault("big.bin", truncate(11 * MiB))  # cut after two parts went up,
    for _ in range(2):  # then every range asked for the rest (retries=2) ends at once
        http_server.add_fault("big.bin", truncate(0))
    with pytest.raises(IncompleteDownloadError):
        http_download(link, s3.uri("big.bin"), retries=2, backoff=0)
    assert http_server.pending_faults("big.bin") == []
    assert s3_keys(s3) == [] and open_uploads(s3) == []
    with pytest.raises(SizeMismatchError):
        http_download(link, s3.uri("big.bin"), expected_size=len(data) - 1)
    assert s3_keys(s3) == [] and open_uploads(s3) == []
    with pytest.raises(ChecksumMismatchError):
        http_download(link, s3.uri("big.bin"), checksum="sha256:" + sha(b"other"))
    assert s3_keys(s3) == [] and open_uploads(s3) == []
    # changed between ranges: cut short, then another version: restarted, never mixed
    from dlutils.stores import fetch as store_fetch

    new = blob(12 * MiB, seed=7)
    http_server.add_fault("big.bin", truncate(7 * MiB))
    original = store_fetch._Stream._check_abort

    def check(stream):
        if stream.received >= 7 * MiB and not stream.restarts:
            http_server.put("big.bin", new)  # the object changes once the first answer ended
        return original(stream)

    monkeypatch.setattr(store_fetch._Stream, "_check_abort", check)
    assert http_download(link, s3.uri("big.bin"), retries=2, backoff=0) == s3.uri("big.bin")
    assert sha(s3_bytes(s3, "big.bin")) == sha(new)
    assert open_uploads(s3) == [] and s3_keys(s3) == ["big.bin"]
    assert [r.status for r in http_server.requests][-3:] == [200, 200, 200]


VICTIM = textwrap.dedent(
    """
    import sys
    from dlutils.stores import fetch_to_store, objects
    objects.PART_SIZE = 5 << 20
    from dlutils import http_download
    http_download(sys.argv[1], sys.argv[2], retries=0)
    """
)


def test_a_killed_upload_resumes_from_the_parts_stored(http_server, s3, monkeypatch):
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(24 * MiB, seed=3)
    http_server.put("big.bin", data)
    link = http_server.url_for("big.bin")
    http_server.rate_limit = 4 * MiB  # the victim is still receiving when it is killed
    root = os.path.dirname(os.path.dirname(os.path.abspath(dlutils.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, link, s3.uri("big.bin")], env=env)

    def stored_parts() -> list:
        found = []
        for upload in open_uploads(s3):
            found = s3.client.list_parts(
                Bucket=s3.name, Key=upload["Key"], UploadId=upload["UploadId"]
            ).get("Parts", [])
        return found

    try:
        deadline = time.monotonic() + 90  # a bound on a broken run, never the outcome
        while len(stored_parts()) < 2 and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait()
    stored = sum(part["Size"] for part in stored_parts())
    assert stored >= 10 * MiB, "the victim never stored two parts"
    assert s3_keys(s3) == [".dlutils/big.bin.upload.json"]  # nothing under the final key
    http_server.rate_limit = None
    http_server.clear_log()
    fetched = fetch_to_store(link, s3.uri("big.bin"))
    assert sha(s3_bytes(s3, "big.bin")) == sha(data)
    assert fetched.received == len(data) - stored  # the stored parts were not fetched again
    ranged = [r for r in http_server.requests if r.status == 206]
    assert [r.range for r in ranged] == [f"bytes={stored}-"]
    assert ranged[0].bytes_sent == len(data) - stored
    # the first answer (whole object, to learn its version) was closed unread
    assert [r.status for r in http_server.requests] == [200, 206]
    assert http_server.requests[0].bytes_sent < len(data)
    assert open_uploads(s3) == [] and s3_keys(s3) == ["big.bin"]


def test_unsupported_destinations_and_requests_are_refused_naming_them(
    http_server, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    http_server.put("a.bin", b"a")
    link = http_server.url_for("a.bin")
    for dest in ("ftp://host/pub/", "hdfs://nn/data", "gs://bucket/p/", "weird+x://y"):
        with pytest.raises(
            InvalidInputError, match=f"dest {re.escape(repr(dest))} is not a destination .*s3://"
        ):
            dlutils.download(link, dest)
        with pytest.raises(
            InvalidInputError, match=f"local_filepath {re.escape(repr(dest))} is not a dest"
        ):
            http_download(link, dest)
    with pytest.raises(InvalidInputError, match="ftp://user:REDACTED@host/") as caught:
        dlutils.download(link, "ftp://user:hunter2@host/pub/")
    assert "hunter2" not in str(caught.value)
    assert http_server.requests == [] and os.listdir(tmp_path) == []


def test_a_job_into_a_bucket_that_does_not_exist_is_refused_before_it_starts(http_server, s3):
    http_server.put("a.bin", b"a")
    dest = f"s3://{s3.name}-absent/p/"
    with pytest.raises(InvalidInputError, match=f"dest '{dest}' cannot be written: bucket"):
        dlutils.download(http_server.url_for("a.bin"), dest)
    assert http_server.requests == []


def test_without_s3fs_an_s3_destination_is_one_clear_error_naming_the_extra(
    http_server, monkeypatch
):
    http_server.put("a.bin", b"a")
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if it were not installed
    extra = re.escape('pip install "dlutils-download[s3fs]"')
    with pytest.raises(InvalidInputError, match=f"'s3://bk/p/' needs the s3fs package.*{extra}"):
        dlutils.download(http_server.url_for("a.bin"), "s3://bk/p/")
    with pytest.raises(InvalidInputError, match=f"local_filepath 's3://bk/a.bin' needs .*{extra}"):
        http_download(http_server.url_for("a.bin"), "s3://bk/a.bin")
    assert http_server.requests == []


def test_an_object_from_elsewhere_is_compared_by_size_and_another_link_warns(
    http_server, memory_fs
):
    http_server.put("a/x.bin", b"12345")
    http_server.put("b/x.bin", b"abcdef")
    memory_fs.pipe_file("/bk/x.bin", b"54321")  # put there by someone else: no record
    assert http_download(http_server.url_for("a/x.bin"), "memory://bk/") == "memory://bk/x.bin"
    assert memory_fs.cat_file("/bk/x.bin") == b"54321"  # same size: kept, as pyvo does
    with pytest.warns(CacheMismatchWarning, match="has 5 bytes, .*b/x.bin has 6"):
        http_download(http_server.url_for("b/x.bin"), "memory://bk/")
    assert memory_fs.cat_file("/bk/x.bin") == b"abcdef"
    with pytest.warns(CacheMismatchWarning, match="b/x.bin, not from .*a/x.bin"):
        http_download(http_server.url_for("a/x.bin"), "memory://bk/")
    assert memory_fs.cat_file("/bk/x.bin") == b"12345"
    with pytest.raises(UnsafePathError, match="where dlutils keeps its records"):
        http_download(http_server.url_for("a/x.bin"), "memory://bk/.dlutils/x.bin")
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(InvalidInputError, match="is this process's memory"):
            dlutils.download(http_server.url_for("a/x.bin"), "memory://bk/", executor=pool)


def test_an_aborted_job_keeps_its_parts_and_the_next_run_completes_from_them(
    http_server, s3, monkeypatch
):
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(16 * MiB, seed=5)
    http_server.put("big.bin", data)
    http_server.rate_limit = 8 * MiB  # still receiving when it is aborted
    job = dlutils.download(http_server.url_for("big.bin"), s3.uri("p/"))
    deadline = time.monotonic() + 60  # a bound on a broken run, never the outcome
    while not open_uploads(s3) and time.monotonic() < deadline:
        time.sleep(0.02)
    upload = open_uploads(s3)[0]
    while time.monotonic() < deadline and not s3.client.list_parts(
        Bucket=s3.name, Key=upload["Key"], UploadId=upload["UploadId"]
    ).get("Parts"):
        time.sleep(0.02)
    job.abort()
    assert job.wait(30).state.value == "aborted"
    assert "p/big.bin" not in s3_keys(s3) and len(open_uploads(s3)) == 1
    http_server.rate_limit = None
    http_server.clear_log()
    status = dlutils.download(http_server.url_for("big.bin"), s3.uri("p/")).wait(60)
    assert (status.finished, status.errors) == (1, 0)
    assert sha(s3_bytes(s3, "p/big.bin")) == sha(data)
    assert [r.status for r in http_server.requests] == [200, 206]
    assert status.bytes <= len(data) - 5 * MiB
    assert open_uploads(s3) == []


def test_a_job_on_an_executor_of_other_processes_writes_into_s3(http_server, s3):
    files = {f"d/g{i}.bin": blob(2000 + i, seed=i) for i in range(5)}
    for name, data in files.items():
        http_server.put(name, data)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        job = dlutils.download(http_server.url + "/d/g{0..4}.bin", s3.uri("x/"), executor=pool)
        status = job.wait(120)
    assert (status.finished, status.errors) == (5, 0)
    for name, data in files.items():
        assert sha(s3_bytes(s3, "x/" + name[2:])) == sha(data)


def test_a_large_object_goes_into_s3_as_parts_each_one_range(http_server, s3, monkeypatch):
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(23 * MiB, seed=9)
    http_server.put("big.bin", data)
    link = http_server.url_for("big.bin")
    got = http_download(link, s3.uri("big.bin"), segments=4, segment_threshold=10 * MiB)
    assert got == s3.uri("big.bin")
    assert sha(s3_bytes(s3, "big.bin")) == sha(data)
    ranges = sorted(r.range for r in http_server.requests if r.status == 206)
    bounds = [(n * 5 * MiB, min(len(data), (n + 1) * 5 * MiB) - 1) for n in range(1, 5)]
    assert ranges == sorted(f"bytes={a}-{b}" for a, b in bounds)  # part 1 came with the 200
    assert sum(r.bytes_sent for r in http_server.requests if r.status == 206) == 18 * MiB
    assert open_uploads(s3) == []
    # another version answers a range: started over in order, never mixed
    http_server.clear_log()
    new = blob(23 * MiB, seed=10)
    changed = []

    def change_then_open(self, start, end=None, **kw):
        if start and not changed:  # the first range asked for: another version, and a
            changed.append(start)  # server that answers 206 whatever If-Range says
            http_server.put("big.bin", new)
            http_server.add_fault("big.bin", ignore_if_range())
        return original(self, start, end, **kw)

    from dlutils.sources.http import HttpRemote

    original = HttpRemote.open
    monkeypatch.setattr(HttpRemote, "open", change_then_open)
    got = http_download(link, s3.uri("big.bin"), cache=False, segments=2,
                        segment_threshold=10 * MiB)  # fmt: skip
    assert changed and sha(s3_bytes(s3, "big.bin")) == sha(new)
    assert open_uploads(s3) == []
    assert [r.status for r in http_server.requests][-1] == 200  # then one answer, in order


def test_a_stalled_body_ends_at_the_jobs_time_limit_and_an_abort_stops_a_stall(
    http_server, s3, monkeypatch
):
    monkeypatch.setattr(objects, "PART_SIZE", 5 * MiB)
    data = blob(12 * MiB, seed=4)
    http_server.put("slow.bin", data)
    link = http_server.url_for("slow.bin")
    http_server.add_fault("slow.bin", stall(60, after_bytes=6 * MiB))
    status = dlutils.download(link, s3.uri("t/"), timeout="1s", retries=0).wait(30)
    assert status.errors == 1
    assert "DownloadTimeoutError" in status.download_errors[0][1]
    assert "t/slow.bin" not in s3_keys(s3)
    assert len(open_uploads(s3)) == 1  # its part is kept for a later run
    http_server.add_fault("slow.bin", stall(60, after_bytes=1 * MiB))
    job = dlutils.download(link, s3.uri("u/"))
    deadline = time.monotonic() + 30  # a bound on a broken run, never the outcome
    while time.monotonic() < deadline and not any(
        r.bytes_sent for r in http_server.requests_for("slow.bin")[1:]
    ):
        time.sleep(0.02)
    job.abort()
    assert job.wait(10).state.value == "aborted"  # not the 60 s of the stall
    assert "u/slow.bin" not in s3_keys(s3)
    status = dlutils.download(link, s3.uri("t/")).wait(60)  # the kept part is used
    assert (status.finished, status.errors) == (1, 0)
    assert sha(s3_bytes(s3, "t/slow.bin")) == sha(data)
    assert status.bytes == len(data) - 5 * MiB
