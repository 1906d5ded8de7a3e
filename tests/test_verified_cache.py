"""``cache="verified"``: files known good by a checksum are kept with no request at all.

Requests are counted where they arrive (``LocalServer.requests``); a re-run with the
server stopped shows what a re-run without the network returns.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from dlutils import InvalidInputError, Job, http_download
from dlutils.freshness import Manifest
from dlutils.localserver import LocalServer
from dlutils.sources.ais import ais_download


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_md5(data: bytes) -> dict[str, str]:
    return {"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}


def run(job: Job):
    status = job.start().wait(60)
    assert status.done
    return status


def put_files(server: LocalServer, n: int, *, md5: bool = True) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        data = os.urandom(1000 + i)
        server.put(f"d/{i:02d}.bin", data, headers=content_md5(data) if md5 else None)
        files[f"{i:02d}.bin"] = data
    return files


def test_range_rerun_makes_zero_requests_and_works_with_the_server_down(http_server, tmp_path):
    files = put_files(http_server, 12)
    template = http_server.url + "/d/{00..11}.bin"
    first = run(Job.range(template, tmp_path, cache="verified"))
    assert (first.finished, first.skipped, first.errors) == (12, 0, 0)
    with Manifest(tmp_path) as manifest:  # the server's Content-MD5, checked against the bytes
        assert {manifest.get(name).verified for name in files} == {"md5"}

    http_server.clear_log()
    again = run(Job.range(template, tmp_path, cache="verified"))
    assert (again.finished, again.skipped, again.errors) == (12, 12, 0)
    assert http_server.requests == []

    http_server.stop()
    down = run(Job.range(template, tmp_path, cache="verified"))
    assert (down.finished, down.skipped, down.errors) == (12, 12, 0)
    for name, data in files.items():
        assert file_sha256(tmp_path / name) == sha256(data)


def test_changed_files_and_unchecked_records_are_not_trusted(http_server, tmp_path):
    plain = put_files(http_server, 2, md5=False)  # ETag and Last-Modified only: no digest
    good = http_server.url_for("d/00.bin")
    data = os.urandom(2000)
    http_server.put("e/edited.bin", data, headers=content_md5(data))
    http_server.put("e/kept.bin", data[::-1], headers=content_md5(data[::-1]))
    links = {
        "plain.bin": good,
        "edited.bin": http_server.url_for("e/edited.bin"),
        "kept.bin": http_server.url_for("e/kept.bin"),
    }
    assert run(Job.multi(links, tmp_path, cache="verified")).errors == 0
    edited = tmp_path / "edited.bin"
    before = os.stat(edited)
    edited.write_bytes(bytes(len(data)))  # same size, other bytes
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))

    http_server.stop()
    status = run(Job.multi(links, tmp_path, cache="verified"))
    assert (status.finished, status.skipped, status.errors) == (1, 1, 2)
    assert sorted(name for name, _ in status.download_errors) == ["edited.bin", "plain.bin"]
    assert all("Connection refused" in error for _, error in status.download_errors)
    assert file_sha256(tmp_path / "kept.bin") == sha256(data[::-1])
    assert file_sha256(tmp_path / "plain.bin") == sha256(plain["00.bin"])  # left as it was


def test_a_record_whose_digest_the_file_lacks_is_not_trusted(http_server, tmp_path):
    data = os.urandom(3000)
    http_server.put("a.bin", data, headers=content_md5(b"something else"))
    path = http_download(http_server.url_for("a.bin"), tmp_path)  # cache=True: not checked
    with Manifest(tmp_path) as manifest:
        recorded = manifest.get(path)
    assert recorded.md5 == hashlib.md5(b"something else").hexdigest() and not recorded.verified
    http_server.stop()
    with pytest.raises(Exception, match="Connection refused"):
        http_download(http_server.url_for("a.bin"), tmp_path, cache="verified")


def test_a_digest_recorded_unchecked_is_checked_once_offline(http_server, tmp_path):
    data = os.urandom(3000)
    http_server.put("a.bin", data, headers=content_md5(data))
    link = http_server.url_for("a.bin")
    path = http_download(link, tmp_path)  # cache=True: the server's md5 recorded, unchecked
    with Manifest(tmp_path) as manifest:
        assert manifest.get(path).verified is None
    http_server.stop()
    assert http_download(link, tmp_path, cache="verified") == path  # hashed: it holds
    with Manifest(tmp_path) as manifest:
        assert manifest.get(path).verified == "md5"
    assert file_sha256(path) == sha256(data)


def test_a_given_checksum_is_hashed_and_trusted_with_no_request(http_server, tmp_path):
    data = os.urandom(5000)
    http_server.put("a.bin", data)
    link, target = http_server.url_for("a.bin"), tmp_path / "a.bin"
    target.write_bytes(data)  # placed by hand: no record at all
    checksum = "sha256:" + sha256(data)
    assert http_download(link, target, cache="verified", checksum=checksum) == str(target)
    assert http_server.requests == []

    target.write_bytes(bytes(len(data)))  # same size, other bytes: fetched again
    with pytest.warns(UserWarning, match="Found cached file"):
        http_download(link, target, cache="verified", checksum=checksum)
    assert len(http_server.requests) >= 1
    assert file_sha256(target) == sha256(data)


def test_an_ais_object_is_kept_with_no_request(tmp_path):
    data = b"a,b\n1,2\n" * 100
    checksum = {"ais-checksum-type": "md5", "ais-checksum-value": hashlib.md5(data).hexdigest()}
    with LocalServer() as cluster:
        cluster.put("v1/objects/tables/t.csv", data, headers={**checksum, "ais-version": "1"})
        link = f"ais://127.0.0.1:{cluster.port}/tables/t.csv"
        path = ais_download(link, tmp_path, cache="verified")
        cluster.clear_log()
        assert ais_download(link, tmp_path, cache="verified") == path
        assert cluster.requests == []
    assert ais_download(link, tmp_path, cache="verified") == path  # the cluster stopped
    assert file_sha256(path) == sha256(data)


def test_an_unknown_cache_mode_fails_before_any_request(http_server, tmp_path):
    http_server.put("a.bin", b"abc")
    with pytest.raises(InvalidInputError, match=r"cache='offline' is not valid.*'verified'"):
        http_download(http_server.url_for("a.bin"), tmp_path, cache="offline")
    with pytest.raises(InvalidInputError, match=r"cache='yes' is not valid"):
        Job.range(http_server.url + "/{0..1}.bin", tmp_path, cache="yes")
    assert http_server.requests == []
    assert http_download(http_server.url_for("a.bin"), tmp_path, cache=1)  # as pyvo: truthy
