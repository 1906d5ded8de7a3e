"""How downloads stop and end: crash and resume, ^C, abort, time limits, bounded retries.

Issue 10 items 5-9 and issue 11 item 13. Processes are killed and interrupted for real
(a child Python running ``http_download`` against a LocalServer of this test); the
bounds on elapsed time only catch a hang, they never measure speed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests
from conftest import make_random_bytes

import dlutils
from dlutils import (
    DownloadAborted,
    DownloadTimeoutError,
    IncompleteDownloadError,
    Job,
    http_download,
)
from dlutils.freshness import Manifest
from dlutils.localserver import reset_after, stall
from dlutils.retry import unreachable
from dlutils.transfer import AbortEvent

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A child that downloads one file in 4 ranges (``segment_threshold`` is lowered).
CHILD = textwrap.dedent(
    """
    import sys
    from dlutils import http_download
    http_download(sys.argv[1], sys.argv[2], segments=4, segment_threshold=1 << 20)
    print("done")
    """
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    with open(path, "rb") as fh:
        return sha256(fh.read())


def sent(server, path: str) -> int:
    """Body bytes the server sent for ``path`` since its log was last cleared."""
    return sum(r.bytes_sent for r in server.requests_for(path) if r.method == "GET")


def spawn(url: str, target) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(condition, what: str, limit: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail (naming ``what``) if it never does."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def recorded(target) -> int:
    """Bytes the resume record of ``target`` says are in its ``.part``."""
    with Manifest(os.path.dirname(target)) as manifest:
        info = manifest.get_partial(os.path.abspath(target))
    if not info or not info.get("segments"):
        return 0
    return sum(seg[2] for seg in info["segments"])


@pytest.fixture
def slow_file(http_server):
    """An 8 MiB file whose next four answers stall for a minute after 1 MiB and a bit.

    A download in 4 ranges (2 MiB each) then holds 1 MiB per range and waits: the
    tests act on it then, whatever the speed of the machine.
    """
    data = make_random_bytes(8 * MiB, seed=5)
    http_server.put("big.bin", data)
    for _ in range(4):
        http_server.add_fault("big.bin", stall(60, after_bytes=MiB + 1000))
    return data


# -- item 5: a killed segmented download resumes -----------------------------------------


def test_a_killed_segmented_download_resumes_from_its_journal(http_server, slow_file, tmp_path):
    target = tmp_path / "big.bin"
    child = spawn(http_server.url_for("big.bin"), target)
    try:
        # The journal records the ranges' progress while they stream (every second):
        # here 1 MiB of each of the 4 ranges, which then stall.
        wait_for(lambda: recorded(target) >= 4 * MiB, "a resume record of 4 x 1 MiB")
        kept = recorded(target)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert 4 * MiB <= kept < len(slow_file) and not target.exists()
    http_server.clear_log()
    http_download(http_server.url_for("big.bin"), target, segments=4, segment_threshold=MiB)
    assert file_sha256(target) == sha256(slow_file)
    # Only what the record did not hold crossed the network again.
    assert sent(http_server, "/big.bin") <= len(slow_file) - kept


# -- item 6: ^C ----------------------------------------------------------------------------


def test_ctrl_c_stops_every_range_at_once_with_one_traceback(http_server, slow_file, tmp_path):
    target = tmp_path / "big.bin"
    child = spawn(http_server.url_for("big.bin"), target)
    try:
        wait_for(lambda: recorded(target) >= 4 * MiB, "every range stalled after 1 MiB")
        child.send_signal(signal.SIGINT)
        # Without the fix ^C waited for the ranges to end (here a minute), then printed
        # two chained tracebacks.
        _, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert err.count("Traceback") == 1 and "During handling" not in err, err
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err
    assert not target.exists() and os.path.exists(f"{target}.part")
    kept = recorded(target)  # recorded on the way out too
    assert kept >= 4 * MiB
    http_server.clear_log()
    http_download(http_server.url_for("big.bin"), target, segments=4, segment_threshold=MiB)
    assert file_sha256(target) == sha256(slow_file)
    assert sent(http_server, "/big.bin") <= len(slow_file) - kept


def test_ctrl_c_in_job_wait_aborts_the_job(http_server, slow_file, tmp_path):
    job = Job.single(http_server.url_for("big.bin"), tmp_path).start()
    wait_for(lambda: sent(http_server, "/big.bin") > 0, "bytes on their way")
    main = threading.main_thread().ident
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            job.wait(timeout=30)
    finally:
        timer.cancel()
    status = job.wait(timeout=10)  # it was aborted: it does not go on downloading
    assert status.state is dlutils.State.ABORTED
    assert os.path.exists(tmp_path / "big.bin.part") and not (tmp_path / "big.bin").exists()


# -- item 7: abort and time limits in every phase ----------------------------------------


def test_abort_reaches_a_request_waiting_for_its_headers(http_server, tmp_path, transport):
    http_server.put("a.bin", b"x" * 1000)
    http_server.add_fault("a.bin", stall(60, before_headers=True))
    job = Job.single(http_server.url_for("a.bin"), tmp_path, transport=transport).start()
    wait_for(lambda: http_server.requests_for("/a.bin"), "the request reached the server")
    job.abort()
    status = job.wait(timeout=10)  # without the fix: 60 s, the stall
    assert status.state is dlutils.State.ABORTED and status.errors == 0


def test_abort_event_stops_http_download_before_headers(http_server, tmp_path, transport):
    http_server.put("a.bin", b"x" * 1000)
    http_server.add_fault("a.bin", stall(60, before_headers=True))
    abort, outcome = AbortEvent(), []

    def run():
        try:
            http_download(
                http_server.url_for("a.bin"), tmp_path / "a.bin", abort=abort, transport=transport
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    wait_for(lambda: http_server.requests_for("/a.bin"), "the request reached the server")
    abort.set()
    worker.join(10)
    assert not worker.is_alive(), "abort did not reach the request waiting for headers"
    assert len(outcome) == 1 and isinstance(outcome[0], DownloadAborted), outcome
    assert not (tmp_path / "a.bin").exists()


def test_job_timeout_bounds_an_attempt_of_a_trickling_server(http_server, tmp_path, transport):
    # 64 KiB at 1 KiB/s: 64 s; each read gets a byte well within any inactivity limit.
    http_server.put("slow.bin", b"y" * 65536)
    http_server.rate_limit = 1024
    job = Job.single(
        http_server.url_for("slow.bin"), tmp_path, timeout="1s", retries=3, transport=transport
    ).start()
    status = job.wait(timeout=20)
    assert status.errors == 1 and status.finished == 0
    (name, error), *_ = status.download_errors
    assert "DownloadTimeoutError" in error and "1 s" in error
    assert http_server.url_for("slow.bin") in error
    assert len(http_server.requests_for("/slow.bin")) == 1  # a timed-out attempt is not retried
    assert not (tmp_path / "slow.bin").exists()


def test_job_timeout_bounds_a_stalled_server_waiting_for_headers(http_server, tmp_path, transport):
    http_server.put("a.bin", b"z" * 100)
    http_server.add_fault("a.bin", stall(60, before_headers=True))
    job = Job.single(
        http_server.url_for("a.bin"), tmp_path, timeout="1s", transport=transport
    ).start()
    status = job.wait(timeout=20)  # without the fix: 5 retries of a 60 s stall
    assert status.errors == 1
    assert "DownloadTimeoutError" in status.download_errors[0][1]
    assert len(http_server.requests_for("/a.bin")) == 1


def test_time_limit_of_an_abort_event_in_http_download(http_server, tmp_path, transport):
    http_server.put("a.bin", b"a" * 10_000)
    http_server.add_fault("a.bin", stall(60, after_bytes=100))
    with pytest.raises(DownloadTimeoutError, match=r"time limit of 0\.5 s"):
        http_download(
            http_server.url_for("a.bin"),
            tmp_path / "a.bin",
            abort=AbortEvent(time_limit=0.5),
            cache=False,
            transport=transport,
        )
    assert len(http_server.requests_for("/a.bin")) == 1
    # The next call resumes what the timed-out attempt brought.
    path = http_download(http_server.url_for("a.bin"), tmp_path / "a.bin", transport=transport)
    assert open(path, "rb").read() == b"a" * 10_000


def test_job_timeout_of_zero_means_no_limit(http_server, tmp_path):
    http_server.put("a.bin", b"q" * 10)
    status = Job.single(http_server.url_for("a.bin"), tmp_path, timeout="0").start().wait(30)
    assert status.finished == 1 and status.errors == 0


# -- item 8: retries end ------------------------------------------------------------------


def test_a_small_file_cut_every_time_ends_after_a_bounded_number_of_attempts(
    http_server, tmp_path, transport
):
    data = make_random_bytes(200 * 1024, seed=2)
    http_server.put("small.bin", data)
    for _ in range(50):
        http_server.add_fault("small.bin", reset_after(100 * 1024))
    with pytest.raises(IncompleteDownloadError, match=r"gave up after \d attempts"):
        http_download(
            http_server.url_for("small.bin"),
            tmp_path / "s.bin",
            retries=1,
            sleep=lambda s: 0,
            transport=transport,
        )
    # At most 2 * (retries + 1) requests, whatever each attempt received.
    assert 2 <= len(http_server.requests_for("/small.bin")) <= 4


def test_a_server_without_ranges_cut_every_time_ends(http_server, tmp_path, transport):
    data = make_random_bytes(3 * MiB, seed=3)
    http_server.put("big.bin", data)
    http_server.support_ranges = False
    for _ in range(50):
        http_server.add_fault("big.bin", reset_after(MiB + 1000))
    with pytest.raises(IncompleteDownloadError, match="gave up after"):
        http_download(
            http_server.url_for("big.bin"),
            tmp_path / "b.bin",
            retries=1,
            sleep=lambda s: 0,
            transport=transport,
        )
    # Every restart from zero is a full attempt: progress earns nothing then.
    assert len(http_server.requests_for("/big.bin")) <= 4


def test_progress_still_earns_retries_when_the_next_attempt_resumes(
    http_server, tmp_path, transport
):
    data = make_random_bytes(3 * MiB, seed=4)
    http_server.put("big.bin", data)
    for cut in (MiB + 10, 2 * MiB + 10):  # each attempt brings more, and is resumed
        http_server.add_fault("big.bin", reset_after(cut - (0 if cut < 2 * MiB else MiB + 10)))
    path = http_download(
        http_server.url_for("big.bin"),
        tmp_path / "b.bin",
        retries=1,
        sleep=lambda s: 0,
        transport=transport,
    )
    assert file_sha256(path) == sha256(data)


# -- item 9: unreachable hosts fail fast, errors name the link ------------------------------


def test_refused_and_unknown_hosts_are_told_apart_from_other_failures():
    refused = requests.ConnectionError("refused")
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert unreachable(refused)
    assert unreachable(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert not unreachable(requests.ConnectionError("('Connection aborted.', ...)"))
    assert not unreachable(ConnectionResetError(104, "Connection reset by peer"))


def test_a_connection_closed_before_the_headers_names_the_link(tmp_path, transport):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()  # no status line: requests says "Connection aborted."

    threading.Thread(target=serve, daemon=True).start()
    link = f"http://user:pw@127.0.0.1:{port}/data/a.bin?sig=s3cret"
    try:
        with pytest.raises(requests.ConnectionError) as info:
            http_download(link, tmp_path / "a.bin", retries=0, transport=transport)
    finally:
        stop.set()
        listener.close()
    message = str(info.value)
    assert message.startswith(f"http://user:REDACTED@127.0.0.1:{port}/data/a.bin"), message
    assert ("Connection aborted" if transport == "requests" else "Empty reply") in message
    assert "s3cret" not in message and ":pw@" not in message


def test_the_attempt_budget_matches_its_documented_bound():
    from dlutils.retry import AttemptBudget, RetryPolicy

    cut = IncompleteDownloadError("cut")
    for retries in range(4):
        always_progress = AttemptBudget(RetryPolicy(retries=retries))
        while always_progress.delay(cut, None, progress=True) is not None:
            pass
        never_progress = AttemptBudget(RetryPolicy(retries=retries))
        while never_progress.delay(cut, None) is not None:
            pass
        assert never_progress.attempts == retries + 1
        assert always_progress.attempts == (2 * (retries + 1) if retries else 1)
    refused = ConnectionRefusedError(111, "Connection refused")
    budget = AttemptBudget(RetryPolicy(retries=5))
    assert budget.delay(refused, None) is not None and budget.delay(refused, None) is None
