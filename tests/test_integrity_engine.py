"""The engine trusts nothing it is told: encodings, ranges of other versions, overlong bodies.

Each test puts a real misbehaving server (LocalServer faults) in front of the engine and
compares what is placed by sha256, over each transport (requests and libcurl).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings

import pytest
import requests
from conftest import list_files as listing
from conftest import make_random_bytes, on_transport

from dlutils import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    ContentEncodingError,
    IncompleteDownloadError,
    OverlongBodyError,
    RemoteChangedError,
    SizeMismatchError,
    http_download,
)
from dlutils.freshness import Manifest
from dlutils.localserver import (
    LocalServer,
    endless,
    extra_bytes,
    gzip_body,
    ignore_if_range,
    truncate,
    wrong_content_range,
)
from dlutils.sources.http import HttpRemote, fetch_http
from dlutils.transfer import TransferOptions, download

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _each_transport(transport, monkeypatch):
    on_transport(monkeypatch, __name__, transport)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path) -> str:
    with open(path, "rb") as f:
        return sha(f.read())


def gets(server, path):
    return [r for r in server.requests_for(path) if r.method == "GET"]


def compressible(n: int, seed: int = 0) -> bytes:
    """Bytes that gzip well (so a compressed body is shorter than the object)."""
    return (make_random_bytes(n // 8, seed=seed) + bytes(n // 8)) * 4 + bytes(n - n // 8 * 8)


# --------------------------------------------------------------------------- 1. Content-Encoding


def test_an_unasked_gzip_body_is_stored_decoded_and_checked(http_server, tmp_path):
    data = compressible(3 * MiB)
    http_server.put("a.bin", data)
    http_server.add_fault("a.bin", gzip_body())
    fetched = fetch_http(
        http_server.url_for("a.bin"),
        tmp_path,
        TransferOptions(checksum="sha256:" + sha(data), expected_size=len(data)),
    )
    assert file_sha(fetched.path) == sha(data) and fetched.size == len(data)
    (request,) = gets(http_server, "a.bin")
    assert request.headers["Accept-Encoding"] == "identity" and request.status == 200
    # The record describes the decoded file, not the compressed bytes: the next call is a
    # conditional GET answered 304, and the file is kept.
    with Manifest(tmp_path) as manifest:
        assert manifest.get(os.path.abspath(fetched.path)).size == len(data)
    assert fetch_http(http_server.url_for("a.bin"), tmp_path).skipped
    assert [r.status for r in gets(http_server, "a.bin")] == [200, 304]


def test_a_file_served_with_content_encoding_is_decoded_whole_never_in_segments(
    http_server, tmp_path
):
    # A .gz file served with Content-Encoding: gzip: what requests (pyvo, pooch) give is the
    # decoded bytes; the compressed ones are never taken for the object, nor cut in ranges.
    inner = make_random_bytes(6 * MiB)
    http_server.put("a.tar.gz", gzip.compress(inner, 1), headers={"Content-Encoding": "gzip"})
    path = http_download(
        http_server.url_for("a.tar.gz"), tmp_path, segment_threshold=2 * MiB, segments=4
    )
    assert file_sha(path) == sha(inner)
    assert [r.range for r in gets(http_server, "a.tar.gz")] == [None]
    assert http_download(http_server.url_for("a.tar.gz"), tmp_path) == path  # a cache hit
    assert [r.status for r in gets(http_server, "a.tar.gz")] == [200, 304]


def test_an_encoding_that_cannot_be_decoded_is_refused_and_nothing_placed(http_server, tmp_path):
    http_server.put("a.bin", b"\x1f\x9d\x90compressed", headers={"Content-Encoding": "compress"})
    url = http_server.url_for("a.bin")
    with pytest.raises(ContentEncodingError, match=r"127\.0\.0\.1.*a\.bin.*compress"):
        http_download(url, tmp_path)
    assert listing(tmp_path) == []
    assert len(gets(http_server, "a.bin")) == 1  # not retried: it will not change


def test_a_compressed_range_is_not_spliced_onto_the_part(http_server, tmp_path):
    data = compressible(3 * MiB, seed=3)
    http_server.put("a.bin", data)
    http_server.add_fault("a.bin", truncate(MiB + 100))
    with pytest.raises(IncompleteDownloadError):
        http_download(http_server.url_for("a.bin"), tmp_path, retries=0)
    http_server.add_fault("a.bin", gzip_body())  # the resume's range comes compressed
    http_server.clear_log()
    path = http_download(http_server.url_for("a.bin"), tmp_path, retries=0)
    assert file_sha(path) == sha(data)
    resume, restart = gets(http_server, "a.bin")
    assert (resume.status, resume.fault, restart.range, restart.status) == (
        206, gzip_body(), None, 200,
    )  # fmt: skip


def test_an_encoding_the_caller_asked_for_is_stored_as_sent(http_server, tmp_path):
    data = compressible(MiB)
    http_server.put("a.bin", data)
    http_server.add_fault("a.bin", gzip_body())
    path = http_download(
        http_server.url_for("a.bin"), tmp_path, headers={"Accept-Encoding": "gzip"}
    )
    assert file_sha(path) == sha(gzip.compress(data, mtime=0))


# --------------------------------------------------------------------------- 2. versions spliced


def interrupted(server, tmp_path, data, cut):
    """A first download of ``data`` cut at ``cut``: its .part and record stay for a resume."""
    server.put("obj.bin", data)
    server.add_fault("obj.bin", truncate(cut))
    with pytest.raises(IncompleteDownloadError):
        http_download(server.url_for("obj.bin"), tmp_path, retries=0)
    assert os.path.getsize(tmp_path / "obj.bin.part") >= MiB


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_a_range_of_a_new_version_is_never_spliced_onto_the_old(http_server, tmp_path, validator):
    http_server.send_etag = validator == "etag"
    old, new = make_random_bytes(3 * MiB, seed=1), make_random_bytes(3 * MiB, seed=2)
    interrupted(http_server, tmp_path, old, 3 * MiB // 2)
    http_server.put("obj.bin", new)
    http_server.add_fault("obj.bin", ignore_if_range())  # a CDN honouring Range, not If-Range
    http_server.clear_log()
    path = http_download(http_server.url_for("obj.bin"), tmp_path, retries=0)
    assert file_sha(path) == sha(new)
    resume, restart = gets(http_server, "obj.bin")
    assert resume.status == 206 and resume.headers.get("If-Range")
    assert (restart.range, restart.status) == (None, 200)


def segmented_part(server, tmp_path, old, total):
    """A segmented download of ``old`` stopped halfway: its .part and journal, as left."""
    etag = requests.head(server.url_for("obj.bin")).headers["ETag"]
    quarter = total // 4
    plan = [[i * quarter, (i + 1) * quarter - 1, 0] for i in range(4)]
    plan[0][2], plan[1][2] = quarter, quarter // 2
    part = bytearray(total)
    part[: quarter + quarter // 2] = old[: quarter + quarter // 2]
    (tmp_path / "obj.bin.part").write_bytes(bytes(part))
    target = tmp_path / "obj.bin"
    with Manifest(tmp_path) as journal:
        journal.put_partial(
            os.path.abspath(target), {"validator": etag, "total": total, "segments": plan}
        )
    return target


def test_a_segmented_resume_never_splices_two_versions(http_server, tmp_path):
    total = 8 * MiB
    old, new = make_random_bytes(total, seed=4), make_random_bytes(total, seed=5)
    http_server.put("obj.bin", old)
    target = segmented_part(http_server, tmp_path, old, total)
    http_server.put("obj.bin", new)
    for _ in range(3):
        http_server.add_fault("obj.bin", ignore_if_range())
    with Manifest(tmp_path) as journal:
        result = download(
            HttpRemote(http_server.url_for("obj.bin")),
            target,
            journal=journal,
            segments=4,
            segment_threshold=2 * MiB,
            sleep=lambda s: None,
        )
    assert file_sha(target) == sha(new) and result.size == total


def test_a_server_that_keeps_splicing_ends_in_remote_changed_error(http_server, tmp_path):
    total = 8 * MiB
    old = make_random_bytes(total, seed=6)
    http_server.put("obj.bin", old)
    target = segmented_part(http_server, tmp_path, old, total)
    # Every range comes back as another version (a total that is not the pinned one).
    for _ in range(40):
        http_server.add_fault("obj.bin", wrong_content_range(total=total + 1))
    with Manifest(tmp_path) as journal, pytest.raises(RemoteChangedError, match="again after"):
        download(
            HttpRemote(http_server.url_for("obj.bin")),
            target,
            journal=journal,
            segments=4,
            segment_threshold=2 * MiB,
            sleep=lambda s: None,
        )
    assert not target.exists()


def test_a_contradictory_content_range_is_refused(http_server, tmp_path):
    data = make_random_bytes(3 * MiB, seed=9)
    interrupted(http_server, tmp_path, data, 3 * MiB // 2)
    # The resume's answer names the range asked, but Content-Length says the body is longer.
    http_server.add_fault("obj.bin", wrong_content_range(end=2 * MiB))
    http_server.clear_log()
    path = http_download(http_server.url_for("obj.bin"), tmp_path, retries=0)
    assert file_sha(path) == sha(data)
    assert [r.range for r in gets(http_server, "obj.bin")][1] is None  # restarted whole


# --------------------------------------------------------------------------- 3. checksum on cache


def test_a_given_checksum_holds_for_a_file_already_there(http_server, tmp_path):
    data = b"the right bytes"
    http_server.put("a.bin", data)
    (tmp_path / "a.bin").write_bytes(b"other bytes!!!!")  # same size, no record
    with pytest.warns(CacheMismatchWarning, match="sha256"):
        path = http_download(http_server.url_for("a.bin"), tmp_path, checksum="sha256:" + sha(data))
    assert file_sha(path) == sha(data)


def test_a_changed_expected_checksum_is_checked_against_a_recorded_file(http_server, tmp_path):
    http_server.put("a.bin", b"served")
    url = http_server.url_for("a.bin")
    path = http_download(url, tmp_path)
    with pytest.warns(CacheMismatchWarning), pytest.raises(ChecksumMismatchError):
        http_download(url, tmp_path, checksum="sha256:" + sha(b"wanted"))
    assert [r.status for r in gets(http_server, "a.bin")] == [200, 304, 200]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert http_download(url, tmp_path, checksum="sha256:" + sha(b"served")) == path


def test_a_file_changed_behind_its_record_is_replaced_when_a_checksum_is_given(
    http_server, tmp_path
):
    data = make_random_bytes(1000)
    http_server.put("a.bin", data)
    path = http_download(http_server.url_for("a.bin"), tmp_path)
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"X")  # same size; the time is put back, so the record still matches
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.warns(CacheMismatchWarning):
        http_download(http_server.url_for("a.bin"), tmp_path, checksum="sha256:" + sha(data))
    assert file_sha(path) == sha(data)


# --------------------------------------------------------------------------- 4. overlong bodies


@pytest.mark.timeout(30)
def test_an_endless_body_stops_at_the_expected_size(http_server, tmp_path):
    http_server.put("a.bin", b"x")
    http_server.add_fault("a.bin", endless())
    with pytest.raises(SizeMismatchError, match="more than the 1000000 bytes expected"):
        http_download(http_server.url_for("a.bin"), tmp_path, expected_size=1_000_000)
    assert listing(tmp_path) == []


def test_an_endless_body_stops_at_the_expected_size_in_the_engine(http_server, tmp_path):
    http_server.put("a.bin", b"x")
    http_server.add_fault("a.bin", endless())
    with pytest.raises(SizeMismatchError):
        download(HttpRemote(http_server.url_for("a.bin")), tmp_path / "a.bin", expected_size=10)
    assert listing(tmp_path) == []


def test_a_range_longer_than_announced_is_refused_and_restarted(http_server, tmp_path):
    data = make_random_bytes(3 * MiB, seed=10)
    interrupted(http_server, tmp_path, data, 3 * MiB // 2)
    http_server.add_fault("obj.bin", extra_bytes(1000, length=False))
    http_server.clear_log()
    path = http_download(http_server.url_for("obj.bin"), tmp_path, sleep=lambda s: None)
    assert file_sha(path) == sha(data)


def test_segments_longer_than_their_range_end_in_an_error(http_server, tmp_path):
    total = 8 * MiB
    data = make_random_bytes(total, seed=11)
    http_server.put("obj.bin", data)
    target = segmented_part(http_server, tmp_path, data, total)
    for _ in range(40):  # every answer runs 10 bytes past what it announces, even whole ones
        http_server.add_fault("obj.bin", extra_bytes(10, length=False))
    with Manifest(tmp_path) as journal, pytest.raises(OverlongBodyError, match="more than"):
        download(
            HttpRemote(http_server.url_for("obj.bin")),
            target,
            journal=journal,
            segments=4,
            segment_threshold=2 * MiB,
            sleep=lambda s: None,
        )
    assert not target.exists()


def test_bytes_past_content_length_are_not_taken_for_the_body(http_server, tmp_path):
    data = make_random_bytes(100_000, seed=12)
    http_server.put("a.bin", data)
    http_server.put("b.bin", data[::-1])
    http_server.add_fault("a.bin", extra_bytes(5000))
    assert file_sha(http_download(http_server.url_for("a.bin"), tmp_path)) == sha(data)
    assert file_sha(http_download(http_server.url_for("b.bin"), tmp_path)) == sha(data[::-1])


@pytest.mark.timeout(30)
def test_a_whole_answer_whose_sizes_disagree_is_refused_not_looped_on(http_server, tmp_path):
    data = make_random_bytes(2 * MiB, seed=13)
    http_server.put("a.bin", data)
    http_server.add_fault("a.bin", wrong_content_range(total=MiB))  # once: a restart cures it
    assert file_sha(http_download(http_server.url_for("a.bin"), tmp_path / "a")) == sha(data)
    for _ in range(100):  # always: Content-Range says 1 MiB, Content-Length 2 MiB
        http_server.add_fault("a.bin", wrong_content_range(total=MiB))
    with pytest.raises(RemoteChangedError, match="Content-Length.*Content-Range.*again after"):
        http_download(http_server.url_for("a.bin"), tmp_path / "b", sleep=lambda s: None)
    assert listing(tmp_path) == ["a"]
    assert len(gets(http_server, "a.bin")) == 4  # two answers each time, no more


def test_a_file_placed_by_another_download_must_hold_the_checksum_asked(http_server, tmp_path):
    import threading
    import time

    data = make_random_bytes(2 * MiB, seed=14)
    http_server.put("a.bin", data)
    http_server.rate_limit = 4 * MiB  # the first download holds the .part for half a second
    url, target = http_server.url_for("a.bin"), tmp_path / "a.bin"
    first = threading.Thread(target=download, args=(HttpRemote(url), target))
    first.start()
    try:
        part = tmp_path / "a.bin.part"
        while not (part.exists() and part.stat().st_size):  # it holds the lock now
            time.sleep(0.01)
        with pytest.raises(ChecksumMismatchError, match="placed by another process"):
            download(HttpRemote(url), target, checksum="sha256:" + sha(b"other"))
    finally:
        first.join()
    assert file_sha(target) == sha(data)


def test_a_file_placed_by_another_download_must_have_the_size_expected(http_server, tmp_path):
    import threading
    import time

    data = make_random_bytes(2 * MiB, seed=15)
    http_server.put("a.bin", data)
    http_server.put("b.bin", data[:MiB])  # another object, saved under the same name
    http_server.rate_limit = 4 * MiB  # the first download holds the .part for half a second
    target = tmp_path / "a.bin"
    first = threading.Thread(
        target=download, args=(HttpRemote(http_server.url_for("a.bin")), target)
    )
    first.start()
    try:
        part = tmp_path / "a.bin.part"
        while not (part.exists() and part.stat().st_size):  # it holds the lock now
            time.sleep(0.01)
        with pytest.raises(SizeMismatchError, match=f"placed by another process.*{MiB}"):
            download(HttpRemote(http_server.url_for("b.bin")), target, expected_size=MiB)
    finally:
        first.join()
    assert file_sha(target) == sha(data)


def test_a_jobs_status_names_the_public_error_of_an_answer_that_never_holds(http_server, tmp_path):
    import dlutils

    http_server.put("a.bin", make_random_bytes(2 * MiB, seed=16))
    for _ in range(100):  # always: Content-Range says 1 MiB, Content-Length 2 MiB
        http_server.add_fault("a.bin", wrong_content_range(total=MiB))
    status = dlutils.download([http_server.url_for("a.bin")], tmp_path, backoff=0).wait(60)
    ((name, error),) = status.download_errors
    assert error.startswith("RemoteChangedError: "), error  # not an engine-private class


def test_a_part_begun_from_another_link_is_not_resumed_from_an_answer_without_validators(
    tmp_path,
):
    # The .part of an interrupted download from one server; then the same file name from
    # another link, whose server sends no ETag nor Last-Modified and honours Range but not
    # If-Range: nothing in its 206 tells that it continues another object.
    old, new = make_random_bytes(3 * MiB, seed=17), make_random_bytes(3 * MiB, seed=18)
    with LocalServer() as first, LocalServer() as second:
        interrupted(first, tmp_path, old, 3 * MiB // 2)
        second.send_etag = second.send_last_modified = False
        second.put("obj.bin", new)
        second.add_fault("obj.bin", ignore_if_range())
        path = http_download(second.url_for("obj.bin"), tmp_path)
    assert file_sha(path) == sha(new)
