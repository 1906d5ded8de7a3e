"""http_download against a real local HTTP server: naming, caching, errors, resume, retries."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
import requests
from conftest import list_files as listing
from conftest import make_random_bytes, on_transport

import dlutils
from dlutils import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    DownloadError,
    IncompleteDownloadError,
    InvalidInputError,
    UnsafePathError,
    UnsupportedSchemeError,
    http_download,
)
from dlutils.freshness import Manifest
from dlutils.localserver import no_range, reset_after, stall, status, truncate
from dlutils.transfer import CHUNK_SIZE

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _each_transport(request, transport, monkeypatch):
    """Every test runs on both transports; one that gives a requests session only on requests."""
    if transport == "curl" and request.node.get_closest_marker("requests_only"):
        pytest.skip("a requests session= or auth object always means the requests transport")
    on_transport(monkeypatch, __name__, transport)


def gets(server, path):
    return [r for r in server.requests_for(path) if r.method == "GET"]


# --------------------------------------------------------------------------- paths and names


def test_explicit_path_is_returned_as_passed(http_server, tmp_path):
    http_server.put("a.bin", b"hello")
    target = tmp_path / "sub" / "dir" / "out.bin"
    result = http_download(http_server.url_for("a.bin"), target)
    assert result == os.fspath(target)
    assert target.read_bytes() == b"hello"
    assert listing(tmp_path) == ["sub/dir/out.bin"]


def test_no_path_gives_a_relative_name_in_the_current_folder(http_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    http_server.put("files/my file.pdf", b"%PDF")
    result = http_download(http_server.url_for("files/my file.pdf") + "?user_id=123")
    assert result == "my file.pdf"
    assert (tmp_path / "my file.pdf").read_bytes() == b"%PDF"


def test_a_folder_means_derive_the_name_inside_it(http_server, tmp_path):
    http_server.put("x/data.csv", b"1,2")
    result = http_download(http_server.url_for("x/data.csv"), tmp_path)
    assert result == os.path.join(tmp_path, "data.csv")


def test_name_from_a_query_parameter_as_pyvo_does(http_server, tmp_path):
    http_server.put("service", b"pdf bytes")
    url = http_server.url_for("service") + "?file=/location/myfile.pdf&size=large"
    assert http_download(url, tmp_path) == os.path.join(tmp_path, "myfile.pdf")


def test_content_disposition_filename_wins(http_server, tmp_path):
    http_server.put(
        "download", b"zip", headers={"Content-Disposition": 'attachment; filename="r.zip"'}
    )
    assert http_download(http_server.url_for("download"), tmp_path) == os.path.join(
        tmp_path, "r.zip"
    )


def test_unsafe_content_disposition_is_ignored(http_server, tmp_path):
    http_server.put(
        "report.txt", b"x", headers={"Content-Disposition": 'attachment; filename="../evil.txt"'}
    )
    result = http_download(http_server.url_for("report.txt"), f"{tmp_path}/in/")
    assert result == os.path.join(tmp_path, "in", "report.txt")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("last", "shown"),
    [("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"), ("~%2F.bashrc", "~/.bashrc")],
)
def test_traversal_in_the_url_is_refused_before_any_request(http_server, tmp_path, last, shown):
    url = http_server.url + "/x/" + last
    with pytest.raises(UnsafePathError, match=f"{shown!r} is not safe".replace(".", r"\.")):
        http_download(url, f"{tmp_path}/dest/")
    assert listing(tmp_path) == []
    assert http_server.requests == []


def test_a_link_with_no_name_asks_for_local_filepath(http_server, tmp_path):
    http_server.put("dir/", b"index")
    with pytest.raises(InvalidInputError, match="pass local_filepath"):
        http_download(http_server.url + "/dir/", tmp_path)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        (
            "ftp://example.org/a.bin",
            UnsupportedSchemeError,
            "'ftp://example.org/a.bin' is not an http",
        ),
        ("", InvalidInputError, "url '' is not valid"),
        ("example.org/a.bin", UnsupportedSchemeError, "scheme 'missing'"),
        (None, InvalidInputError, "url None is not valid"),
    ],
)
def test_bad_urls_are_clear_errors(tmp_path, url, error, match):
    with pytest.raises(error, match=match):
        http_download(url, tmp_path / "a.bin")
    assert listing(tmp_path) == []


def test_bad_checksum_fails_before_any_request(http_server, tmp_path):
    http_server.put("a.bin", b"x")
    with pytest.raises(InvalidInputError, match="checksum 'sha256:nothex' is not valid"):
        http_download(http_server.url_for("a.bin"), tmp_path / "a.bin", checksum="sha256:nothex")
    assert http_server.requests == []
    assert listing(tmp_path) == []


def test_destination_that_cannot_be_created(http_server, tmp_path):
    http_server.put("a.bin", b"x")
    (tmp_path / "file").write_bytes(b"i am a file")
    with pytest.raises(DownloadError, match="cannot create the folder .*file/sub"):
        http_download(http_server.url_for("a.bin"), tmp_path / "file" / "sub" / "a.bin")
    assert listing(tmp_path) == ["file"]


def test_credentials_never_appear_in_errors(http_server, tmp_path):
    url = http_server.url + "/missing.bin?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIAXXX"
    with pytest.raises(requests.HTTPError) as info:
        http_download(url, tmp_path / "m.bin")
    assert "s3cr3t" not in str(info.value) and "AKIAXXX" not in str(info.value)
    assert "REDACTED" in str(info.value)


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize("code", [401, 403, 404, 410])
def test_client_errors_raise_http_error_and_are_not_retried(http_server, tmp_path, code):
    http_server.put("a.bin", b"x")
    http_server.add_fault("a.bin", status(code))
    with pytest.raises(requests.HTTPError, match=str(code)) as info:
        http_download(http_server.url_for("a.bin"), tmp_path / "a.bin", sleep=lambda s: None)
    assert info.value.response.status_code == code
    assert len(gets(http_server, "/a.bin")) == 1
    assert listing(tmp_path) == []


def test_missing_file_raises_404(http_server, tmp_path):
    with pytest.raises(requests.HTTPError, match="404"):
        http_download(http_server.url_for("nothing.bin"), tmp_path)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(http_server, tmp_path, code):
    http_server.put("a.bin", b"payload")
    http_server.add_fault("a.bin", status(code, retry_after="7"))
    http_server.add_fault("a.bin", status(code, retry_after="3"))
    pauses = []
    path = http_download(http_server.url_for("a.bin"), tmp_path / "a.bin", sleep=pauses.append)
    assert open(path, "rb").read() == b"payload"
    assert pauses == [7.0, 3.0]
    assert [r.status for r in gets(http_server, "/a.bin")] == [code, code, 200]


def test_server_errors_back_off_exponentially(http_server, tmp_path):
    http_server.put("a.bin", b"payload")
    for _ in range(3):
        http_server.add_fault("a.bin", status(500))
    pauses = []
    http_download(
        http_server.url_for("a.bin"), tmp_path / "a.bin", backoff=1.0, sleep=pauses.append
    )
    assert len(pauses) == 3
    assert 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0 and 2.0 <= pauses[2] <= 4.0


def test_retries_run_out(http_server, tmp_path):
    http_server.put("a.bin", b"payload")
    for _ in range(3):
        http_server.add_fault("a.bin", status(503))
    with pytest.raises(requests.HTTPError, match="503"):
        http_download(
            http_server.url_for("a.bin"), tmp_path / "a.bin", retries=2, sleep=lambda s: 0
        )
    assert len(gets(http_server, "/a.bin")) == 3
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- broken bodies


@pytest.mark.parametrize("fault", [truncate, reset_after], ids=["truncated", "reset"])
def test_broken_body_resumes_with_a_range(http_server, tmp_path, fault):
    data = make_random_bytes(3 * MiB + 123)
    http_server.put("big.bin", data)
    cut = 2 * MiB + 7
    http_server.add_fault("big.bin", fault(cut))
    path = http_download(http_server.url_for("big.bin"), tmp_path / "big.bin", sleep=lambda s: 0)
    assert open(path, "rb").read() == data
    first, second = gets(http_server, "/big.bin")
    assert first.range is None
    # Only whole 1 MiB reads reached the disk before the break: resume from there.
    assert second.range in (f"bytes={cut}-", f"bytes={2 * MiB}-")
    assert second.headers["If-Range"] == first_etag(http_server, "big.bin")
    assert second.status == 206
    assert not os.path.exists(path + ".part")


def first_etag(server, path):
    return requests.head(server.url_for(path)).headers["ETag"]


def test_a_short_small_file_is_fetched_again_whole(http_server, tmp_path):
    http_server.put("small.bin", b"0123456789")
    http_server.add_fault("small.bin", truncate(4))
    path = http_download(http_server.url_for("small.bin"), tmp_path / "s.bin", sleep=lambda s: 0)
    assert open(path, "rb").read() == b"0123456789"


def test_incomplete_after_all_retries_keeps_the_part(http_server, tmp_path):
    data = make_random_bytes(2 * MiB + 5)
    http_server.put("big.bin", data)
    # The first attempt brings 1 MiB; the next two bring nothing and use up the retries.
    for fault in (truncate(MiB + 10), truncate(0), truncate(0)):
        http_server.add_fault("big.bin", fault)
    with pytest.raises(IncompleteDownloadError, match="connection broke"):
        http_download(
            http_server.url_for("big.bin"), tmp_path / "big.bin", retries=2, sleep=lambda s: 0
        )
    assert not (tmp_path / "big.bin").exists()
    assert os.path.getsize(tmp_path / "big.bin.part") == MiB + 10  # every byte that came
    assert len(gets(http_server, "/big.bin")) == 3


def test_a_stalled_connection_times_out_and_is_retried(http_server, tmp_path):
    http_server.put("a.bin", b"abc" * 1000)
    http_server.add_fault("a.bin", stall(30, after_bytes=10))
    path = http_download(
        http_server.url_for("a.bin"), tmp_path / "a.bin", timeout=0.3, sleep=lambda s: 0
    )
    assert open(path, "rb").read() == b"abc" * 1000


def test_no_range_support_restarts_from_zero(http_server, tmp_path):
    data = make_random_bytes(2 * MiB + 1)
    http_server.put("big.bin", data)
    http_server.add_fault("big.bin", truncate(MiB + 10))
    http_server.add_fault("big.bin", no_range())
    path = http_download(http_server.url_for("big.bin"), tmp_path / "big.bin", sleep=lambda s: 0)
    assert open(path, "rb").read() == data
    assert [r.status for r in gets(http_server, "/big.bin")] == [200, 200]


# --------------------------------------------------------------------------- checksums


@pytest.mark.parametrize("algorithm", ["sha256", "md5", "crc32c"])
def test_a_right_checksum_places_the_file(http_server, tmp_path, algorithm):
    data = make_random_bytes(100_000)
    http_server.put("a.bin", data)
    if algorithm == "crc32c":
        from dlutils.checksums import crc32c

        digest = f"{crc32c(data):08x}"
    else:
        digest = hashlib.new(algorithm, data).hexdigest()
    path = http_download(http_server.url_for("a.bin"), tmp_path, checksum=f"{algorithm}:{digest}")
    assert open(path, "rb").read() == data


def test_a_wrong_checksum_places_nothing(http_server, tmp_path):
    http_server.put("a.bin", b"tampered")
    wrong = "sha256:" + hashlib.sha256(b"original").hexdigest()
    with pytest.raises(ChecksumMismatchError, match="expected sha256") as info:
        http_download(http_server.url_for("a.bin"), tmp_path, checksum=wrong)
    assert info.value.actual == hashlib.sha256(b"tampered").hexdigest()
    assert listing(tmp_path) == []


def test_checksum_over_a_resumed_download(http_server, tmp_path):
    data = make_random_bytes(3 * MiB)
    http_server.put("big.bin", data)
    http_server.add_fault("big.bin", reset_after(2 * MiB + 100))
    digest = "md5:" + hashlib.md5(data).hexdigest()
    path = http_download(
        http_server.url_for("big.bin"), tmp_path, checksum=digest, sleep=lambda s: 0
    )
    assert open(path, "rb").read() == data
    assert any(r.status == 206 for r in gets(http_server, "/big.bin"))


# --------------------------------------------------------------------------- cache


def test_cache_hit_uses_a_conditional_get(http_server, tmp_path, capsys):
    http_server.put("a.bin", b"v1")
    url = http_server.url_for("a.bin")
    path = http_download(url, tmp_path)
    mtime = os.stat(path).st_mtime_ns
    assert http_download(url, tmp_path, verbose=True) == path
    assert f"Found cached file {path}." in capsys.readouterr().out
    second = gets(http_server, "/a.bin")[-1]
    assert second.status == 304
    assert "If-None-Match" in second.headers
    assert os.stat(path).st_mtime_ns == mtime


def test_changed_remote_is_fetched_again(http_server, tmp_path):
    http_server.put("a.bin", b"v1")
    url = http_server.url_for("a.bin")
    path = http_download(url, tmp_path)
    http_server.put("a.bin", b"version two")
    assert http_download(url, tmp_path) == path
    assert open(path, "rb").read() == b"version two"


def test_cache_false_always_downloads(http_server, tmp_path):
    http_server.put("a.bin", b"v1")
    url = http_server.url_for("a.bin")
    http_download(url, tmp_path)
    http_download(url, tmp_path, cache=False)
    assert [r.status for r in gets(http_server, "/a.bin")] == [200, 200]


def test_without_record_same_size_is_a_hit_as_pyvo_does(http_server, tmp_path):
    http_server.put("a.bin", b"12345")
    (tmp_path / "a.bin").write_bytes(b"abcde")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = http_download(http_server.url_for("a.bin"), tmp_path / "a.bin")
    assert open(path, "rb").read() == b"abcde"


def test_without_record_wrong_size_warns_and_replaces(http_server, tmp_path):
    http_server.put("a.bin", b"the real content")
    (tmp_path / "a.bin").write_bytes(b"stale")
    with pytest.warns(CacheMismatchWarning, match="wrong size"):
        path = http_download(http_server.url_for("a.bin"), tmp_path / "a.bin")
    assert open(path, "rb").read() == b"the real content"
    assert issubclass(CacheMismatchWarning, UserWarning)


def test_a_file_edited_by_hand_loses_its_record(http_server, tmp_path):
    http_server.put("a.bin", b"12345")
    url = http_server.url_for("a.bin")
    path = http_download(url, tmp_path)
    with open(path, "wb") as f:
        f.write(b"edited by hand, longer")
    with pytest.warns(CacheMismatchWarning):
        http_download(url, tmp_path)
    assert open(path, "rb").read() == b"12345"


def test_manifest_false_keeps_no_record(http_server, tmp_path):
    http_server.put("a.bin", b"x")
    http_download(http_server.url_for("a.bin"), tmp_path, manifest=False)
    assert os.listdir(tmp_path) == ["a.bin"]


def test_the_manifest_records_where_a_file_came_from(http_server, tmp_path):
    http_server.put("a.bin", b"x")
    url = http_server.url_for("a.bin") + "?token=secret-token"
    http_download(url, tmp_path)
    with Manifest(tmp_path) as manifest:
        record = manifest.get(tmp_path / "a.bin")
    assert record.size == 1 and record.etag
    assert "secret-token" not in record.source


# --------------------------------------------------------------------------- resume


def test_resume_asks_only_for_missing_bytes_and_a_changed_file_restarts(http_server, tmp_path):
    data = make_random_bytes(4 * MiB)
    http_server.put("big.bin", data)
    url = http_server.url_for("big.bin")
    http_server.add_fault("big.bin", truncate(2 * MiB))
    with pytest.raises(IncompleteDownloadError):
        http_download(url, tmp_path / "big.bin", retries=0)
    assert os.path.getsize(tmp_path / "big.bin.part") == 2 * MiB
    # The file changes on the server: If-Range no longer matches, so it comes whole.
    new = make_random_bytes(4 * MiB, seed=1)
    http_server.put("big.bin", new)
    http_server.clear_log()
    http_download(url, tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == new
    (request,) = gets(http_server, "/big.bin")
    assert request.range == f"bytes={2 * MiB}-" and request.status == 200


KILL_CHILD = textwrap.dedent(
    """
    import sys
    from dlutils import http_download
    http_download(sys.argv[1], sys.argv[2], retries=0)
    """
)


@pytest.mark.parametrize("changed", [False, True], ids=["same", "changed"])
def test_sigkill_then_rerun(http_server, tmp_path, changed):
    data = make_random_bytes(6 * MiB)
    http_server.put("big.bin", data)
    http_server.rate_limit = 4 * MiB
    url = http_server.url_for("big.bin")
    target = tmp_path / "big.bin"
    part = tmp_path / "big.bin.part"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, url, str(target)])
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= CHUNK_SIZE):
            assert child.poll() is None, "the child finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert not target.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    http_server.rate_limit = None
    expected = data
    if changed:
        expected = make_random_bytes(6 * MiB, seed=7)
        http_server.put("big.bin", expected)
    http_server.clear_log()
    assert http_download(url, target) == str(target)
    assert target.read_bytes() == expected
    assert not part.exists()
    (request,) = gets(http_server, "/big.bin")
    assert request.range == f"bytes={kept}-"
    if changed:
        assert request.status == 200 and request.bytes_sent == len(expected)
    else:
        assert request.status == 206 and request.bytes_sent == len(data) - kept


def test_two_processes_fetching_one_file_do_not_collide(http_server, tmp_path):
    data = make_random_bytes(3 * MiB)
    http_server.put("big.bin", data)
    http_server.rate_limit = 6 * MiB
    url = http_server.url_for("big.bin")
    target = tmp_path / "big.bin"
    children = [
        subprocess.Popen([sys.executable, "-c", KILL_CHILD, url, str(target)]) for _ in range(3)
    ]
    assert [c.wait(60) for c in children] == [0, 0, 0]
    assert target.read_bytes() == data
    assert listing(tmp_path) == ["big.bin"]
    assert sum(r.bytes_sent for r in gets(http_server, "/big.bin")) < 2 * len(data)


# --------------------------------------------------------------------------- segments, abort


def test_large_objects_come_in_parallel_segments(http_server, tmp_path):
    data = make_random_bytes(8 * MiB + 3)
    http_server.put("big.bin", data)
    path = http_download(
        http_server.url_for("big.bin"), tmp_path, segment_threshold=2 * MiB, segments=4
    )
    assert open(path, "rb").read() == data
    ranges = sorted(r.range for r in gets(http_server, "/big.bin") if r.range)
    assert len(ranges) == 3  # the first segment rides on the first response


def test_segmented_download_recovers_a_broken_segment(http_server, tmp_path):
    data = make_random_bytes(8 * MiB)
    http_server.put("big.bin", data)
    http_server.add_fault("big.bin", reset_after(MiB + 5))  # the first response
    path = http_download(
        http_server.url_for("big.bin"),
        tmp_path,
        segment_threshold=2 * MiB,
        segments=4,
        sleep=lambda s: 0,
    )
    assert open(path, "rb").read() == data


def test_abort_interrupts_a_blocked_read_and_keeps_the_part(http_server, tmp_path):
    data = make_random_bytes(4 * MiB)
    http_server.put("big.bin", data)
    # The server goes silent for ten minutes after 2 MiB: only abort can end this download
    # (a broken abort shows as a pytest-timeout failure, never as a timing assertion).
    http_server.add_fault("big.bin", stall(600, after_bytes=2 * MiB))
    abort = dlutils.transfer.AbortEvent()
    part = tmp_path / "big.bin.part"

    def abort_when_blocked():
        while not (part.exists() and part.stat().st_size >= 2 * MiB):
            time.sleep(0.01)
        abort.set()

    watcher = threading.Thread(target=abort_when_blocked)
    watcher.start()
    with pytest.raises(dlutils.DownloadAborted, match="kept for resume"):
        http_download(http_server.url_for("big.bin"), tmp_path, abort=abort, timeout=600)
    watcher.join()
    assert part.stat().st_size == 2 * MiB and not (tmp_path / "big.bin").exists()
    http_server.clear_log()
    path = http_download(http_server.url_for("big.bin"), tmp_path)
    assert open(path, "rb").read() == data
    assert gets(http_server, "/big.bin")[0].range == f"bytes={2 * MiB}-"


def test_progress_reports_every_byte_in_few_calls(http_server, tmp_path):
    data = make_random_bytes(5 * MiB + 1)
    http_server.put("big.bin", data)
    calls = []
    http_download(http_server.url_for("big.bin"), tmp_path, progress=calls.append)
    assert sum(calls) == len(data)
    assert len(calls) <= 7  # at most one per 1 MiB read, never one per network packet


def test_a_complete_part_placed_after_416_keeps_its_record(http_server, tmp_path):
    # Killed after the last byte but before the rename: the resume asks for bytes past the
    # end, the server answers 416, and the file is placed. Its record must still carry
    # the ETag, or the next call downloads it all again.
    data = make_random_bytes(2 * MiB)
    http_server.put("a.bin", data)
    etag = first_etag(http_server, "a.bin")
    target = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(data)
    with Manifest(tmp_path) as manifest:
        manifest.put_partial(os.path.abspath(target), {"validator": etag, "total": len(data)})
    http_server.clear_log()
    http_download(http_server.url_for("a.bin"), target)
    assert target.read_bytes() == data
    assert [r.status for r in gets(http_server, "/a.bin")] == [416]
    http_download(http_server.url_for("a.bin"), target)
    assert [r.status for r in gets(http_server, "/a.bin")] == [416, 304]


def test_abort_wakes_a_read_on_a_connection_close_response(tmp_path):
    # http.client hands the socket to the response when the server says Connection:
    # close; abort must reach it there too (it used to wait for the read timeout).
    import socket as socket_module

    listener = socket_module.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n"
            + b"x" * (MiB + MiB // 2)
        )
        stop.wait(600)  # then silence: only an abort can end the read
        conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    abort = dlutils.transfer.AbortEvent()
    part = tmp_path / "big.bin.part"

    def abort_when_blocked():
        # After the first 1 MiB is written, the second read waits for bytes that never come.
        while not (part.exists() and part.stat().st_size >= MiB):
            time.sleep(0.01)
        time.sleep(0.1)
        abort.set()

    outcome = []

    def download():
        try:
            http_download(f"http://127.0.0.1:{port}/big.bin", tmp_path, abort=abort, timeout=600)
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome.append(exc)

    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    try:
        abort_when_blocked()
        # Not a timing check: without the fix the read stays blocked for its 600 s timeout.
        worker.join(60)
        assert not worker.is_alive(), "abort did not wake the blocked read"
        assert len(outcome) == 1 and isinstance(outcome[0], dlutils.DownloadAborted)
    finally:
        stop.set()
        listener.close()


def test_a_dead_server_gets_one_quick_retry_then_raises_naming_the_link(tmp_path):
    import socket as socket_module

    with socket_module.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed on exit: nothing listens there any more
    pauses = []
    link = f"http://127.0.0.1:{port}/a.bin?token=s3cret"
    with pytest.raises(
        requests.ConnectionError, match=rf"^http://127\.0\.0\.1:{port}/a\.bin"
    ) as info:
        http_download(link, tmp_path / "a.bin", retries=5, sleep=pauses.append)
    assert len(pauses) == 1 and pauses[0] <= 0.5  # refused: one quick retry, not five slow ones
    assert "s3cret" not in str(info.value)
    assert listing(tmp_path) == []


FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from dlutils import DownloadError, http_download
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # the disk is "full" at 1 MiB
    try:
        http_download(sys.argv[1], sys.argv[2], manifest=False)
    except DownloadError as exc:
        print("DownloadError:", exc)
        sys.exit(3)
    """
)


def test_a_full_disk_is_a_clear_error_and_nothing_is_placed(http_server, tmp_path):
    http_server.put("big.bin", make_random_bytes(3 * MiB))
    target = tmp_path / "big.bin"
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, http_server.url_for("big.bin"), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 3, child.stderr
    assert "cannot write" in child.stdout and "big.bin.part" in child.stdout
    assert not target.exists()  # never under the final name
    assert (tmp_path / "big.bin.part").stat().st_size <= 1 << 20  # kept for a later resume
