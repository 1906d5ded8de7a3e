"""Tests for dlutils.progress: callback adaptation, the throttle, and the lazy tqdm adapter."""

from __future__ import annotations

import io
import re
import sys
import threading
import time

import pytest

from dlutils.progress import Callback, FunctionCallback, Throttled, TqdmCallback, as_callback


class Recorder(Callback):
    """Records every call it receives, safely from several threads."""

    def __init__(self):
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def set_size(self, size):
        with self._lock:
            self.calls.append(("set_size", size))

    def update(self, nbytes):
        with self._lock:
            self.calls.append(("update", nbytes))

    def close(self):
        with self._lock:
            self.calls.append(("close",))

    @property
    def updates(self) -> list[int]:
        return [c[1] for c in self.calls if c[0] == "update"]


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------------------------
# as_callback
# ---------------------------------------------------------------------------------------------


def test_as_callback_none_gives_a_do_nothing_callback():
    cb = as_callback(None)
    assert type(cb) is Callback
    cb.set_size(10)
    cb.update(5)
    cb.close()


def test_as_callback_passes_a_callback_through():
    rec = Recorder()
    assert as_callback(rec) is rec


def test_as_callback_wraps_a_function():
    got = []
    cb = as_callback(got.append)
    assert isinstance(cb, FunctionCallback)
    cb.set_size(100)
    cb.update(3)
    cb.update(-1)
    cb.close()
    assert got == [3, -1]


@pytest.mark.parametrize("bad", [42, "tqdm", [print], True])
def test_as_callback_rejects_other_values(bad):
    with pytest.raises(TypeError, match=re.escape(f"progress={bad!r} is not valid")):
        as_callback(bad)


# ---------------------------------------------------------------------------------------------
# Throttled
# ---------------------------------------------------------------------------------------------


def test_throttled_accumulates_and_forwards_at_most_once_per_interval():
    rec, clock = Recorder(), FakeClock()
    th = Throttled(rec, interval=1.0, clock=clock)
    for _ in range(5):
        th.update(10)
    assert rec.updates == []  # no time has passed since creation
    clock.now += 0.5
    th.update(10)
    assert rec.updates == []
    clock.now += 0.5  # one interval since creation
    th.update(10)
    assert rec.updates == [70]
    th.update(1)
    clock.now += 0.99
    th.update(1)
    assert rec.updates == [70]
    clock.now += 0.01
    th.update(1)
    assert rec.updates == [70, 3]


def test_throttled_forwards_every_update_when_each_is_an_interval_apart():
    rec, clock = Recorder(), FakeClock()
    th = Throttled(rec, interval=0.25, clock=clock)
    for n in (5, 6, 7):
        clock.now += 0.25
        th.update(n)
    assert rec.updates == [5, 6, 7]


def test_throttled_counts_negative_updates_and_skips_a_zero_net():
    rec, clock = Recorder(), FakeClock()
    th = Throttled(rec, interval=1.0, clock=clock)
    th.update(100)
    th.update(-100)  # a restart discarded the bytes
    clock.now += 1.0
    th.update(0)
    assert rec.updates == []
    th.update(-5)
    th.flush()
    assert rec.updates == [-5]


def test_throttled_flush_and_close_lose_nothing():
    rec, clock = Recorder(), FakeClock()
    th = Throttled(rec, interval=60.0, clock=clock)
    th.set_size(1000)
    for _ in range(7):
        th.update(3)
    th.flush()
    assert rec.updates == [21]
    th.flush()  # nothing pending: nothing sent
    assert rec.updates == [21]
    th.update(4)
    th.close()
    assert rec.calls == [("set_size", 1000), ("update", 21), ("update", 4), ("close",)]


def test_throttled_close_without_updates_just_closes():
    rec = Recorder()
    Throttled(rec, clock=FakeClock()).close()
    assert rec.calls == [("close",)]


def test_throttled_is_thread_safe():
    rec, clock = Recorder(), FakeClock()
    th = Throttled(rec, interval=0.5, clock=clock)
    start = threading.Barrier(8)
    tick = threading.Lock()

    def work(k):
        start.wait()
        for i in range(1000):
            if i % 100 == k:
                with tick:
                    clock.now += 0.5
            th.update(1)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as much as possible
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    th.close()
    assert sum(rec.updates) == 8 * 1000
    assert all(n > 0 for n in rec.updates)
    assert len(rec.updates) <= 8 * 10 + 1  # one per clock tick, plus the final flush
    assert rec.calls[-1] == ("close",)


# ---------------------------------------------------------------------------------------------
# TqdmCallback
# ---------------------------------------------------------------------------------------------


def test_tqdm_callback_creates_its_bar_lazily():
    pytest.importorskip("tqdm")
    out = io.StringIO()
    cb = TqdmCallback("shard-000.bin", file=out, mininterval=0)
    assert cb._bar is None and out.getvalue() == ""
    cb.set_size(2048)
    bar = cb._bar
    assert bar is not None and bar.total == 2048
    cb.update(1024)
    cb.update(1024)
    assert bar.n == 2048
    cb.close()
    text = out.getvalue()
    assert "shard-000.bin" in text and "100%" in text and "2.00k" in text


def test_tqdm_callback_update_before_size_then_size_known():
    pytest.importorskip("tqdm")
    out = io.StringIO()
    cb = TqdmCallback(file=out, mininterval=0)
    cb.update(10)
    assert cb._bar.total is None and cb._bar.n == 10
    cb.set_size(40)
    assert cb._bar.total == 40
    cb.close()
    assert "10.0/40.0" in out.getvalue()


def test_tqdm_callback_close_without_use_creates_nothing():
    out = io.StringIO()
    cb = TqdmCallback(file=out)
    cb.close()
    assert cb._bar is None and out.getvalue() == ""


def test_throttled_delivers_held_bytes_in_the_background_during_a_stall():
    received = []

    class Recorder(Callback):
        def update(self, nbytes):
            received.append(nbytes)

    th = Throttled(Recorder(), interval=0.05)
    th.update(10)  # within the interval of creation: held
    th.update(5)
    deadline = time.monotonic() + 10
    while sum(received) < 15:  # arrives with no further call
        assert time.monotonic() < deadline, "held bytes were never delivered"
        time.sleep(0.01)
    assert sum(received) == 15


def test_throttled_is_watched_again_after_the_background_let_it_go():
    """The background thread drops a callback with nothing held; bytes held later (a second
    stall) are delivered by it all the same."""
    received = []

    class Recorder(Callback):
        def update(self, nbytes):
            received.append(nbytes)

    th = Throttled(Recorder(), interval=0.05)
    deadline = time.monotonic() + 10
    for expected in (10, 25, 45):  # three stalls, each after bytes held within the interval
        th._last = time.monotonic()  # the next update is held, whatever the machine's pace
        th.update(expected - sum(received))
        while sum(received) < expected:
            assert time.monotonic() < deadline, f"held bytes never delivered: {received}"
            time.sleep(0.01)
        while th._watched:  # let the background thread see it has nothing more
            assert time.monotonic() < deadline, "the background thread kept it forever"
            time.sleep(0.01)
    assert sum(received) == 45


def test_throttled_fed_by_threads_with_the_background_running_loses_nothing():
    received = []
    lock = threading.Lock()

    class Recorder(Callback):
        def update(self, nbytes):
            with lock:
                received.append(nbytes)

    th = Throttled(Recorder(), interval=0.001)
    start = threading.Barrier(8)

    def work():
        start.wait()
        for _ in range(2000):
            th.update(3)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    th.flush()
    deadline = time.monotonic() + 10
    while th._watched:  # a delivery the background thread took may still be on its way
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sum(received) == 8 * 2000 * 3


# ---------------------------------------------------------------------------------------------
# labels, and the job's bar of bytes
# ---------------------------------------------------------------------------------------------

SIGNED = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1"
    "&X-Amz-Signature=" + "ab" * 32
)


def test_the_label_of_a_signed_link_is_its_name(http_server, tmp_path, capsys):
    pytest.importorskip("tqdm")
    data = bytes(range(256)) * 40
    http_server.put("train/shard-0001.tar", data)
    from dlutils import http_download

    path = http_download(
        f"{http_server.url}/train/shard-0001.tar?{SIGNED}", tmp_path / "s.tar", verbose=True
    )
    assert open(path, "rb").read() == data
    shown = capsys.readouterr().err
    assert "shard-0001.tar: 100%" in shown, shown
    assert "X-Amz" not in shown and "127.0.0.1" not in shown
    out = io.StringIO()
    bar = TqdmCallback(f"https://host/x/{'a' * 80}.tar?{SIGNED}", file=out, ncols=120)
    bar.update(5)
    bar.close()
    assert bar._bar.desc == "…" + ("a" * 80 + ".tar")[-31:]


def test_a_job_bar_counts_the_bytes_received_and_moves_during_a_large_file(http_server, tmp_path):
    pytest.importorskip("tqdm")
    from dlutils import Job
    from dlutils.localserver import stall

    big = bytes(range(256)) * 4096 * 3  # 3 MiB, stalled after 2 MiB
    http_server.put("d/big.bin", big)
    for i in range(3):
        http_server.put(f"d/f{i}.bin", bytes([i]) * 1000)
    (tmp_path / "f2.bin").write_bytes(bytes([2]) * 1000)  # current: skipped, never received
    http_server.add_fault("d/big.bin", stall(1.0, after_bytes=2 << 20))
    job = Job.multi(
        [f"{http_server.url}/d/{n}.bin" for n in ("big", "f0", "f1", "f2")],
        tmp_path,
        progress=True,
    )
    job.start()
    try:
        deadline = time.monotonic() + 20
        while not (job._bar is not None and job._bar.n >= 1 << 20):
            assert time.monotonic() < deadline, "the job bar never moved during the big file"
            time.sleep(0.02)
        assert job.status().current_tasks  # moved while the big file was still coming
        status = job.wait(60)
    finally:
        job.abort()
    assert (status.finished, status.skipped, status.errors) == (4, 1, 0)
    assert (tmp_path / "big.bin").read_bytes() == big
    bar = job._bar
    assert bar.unit == "B" and bar.n == status.bytes == len(big) + 2000
    assert bar.total == bar.n
    assert "4/4 files, 0 errors" in str(bar)
