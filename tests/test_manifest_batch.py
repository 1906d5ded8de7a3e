"""The manifest writes its records in batches: few transactions, nothing lost but a batch."""

from __future__ import annotations

import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dlutils.freshness
from dlutils.freshness import Manifest, ObjectAttrs

REPO = str(Path(__file__).resolve().parents[1])


def write(root: Path, name: str, data: bytes = b"data") -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def on_disk(root: Path) -> dict[str, str]:
    """The records in the database file itself, read by a connection of our own."""
    path = root / Manifest.FILENAME
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, attrs FROM objects").fetchall())
    finally:
        db.close()


@pytest.fixture
def commits(monkeypatch):
    """Count the COMMITs the manifest's connections run (SQLite's own statement trace)."""
    seen: list[str] = []
    real = sqlite3.connect

    def traced(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
        return conn

    monkeypatch.setattr(dlutils.freshness.sqlite3, "connect", traced)
    return seen


def test_many_puts_take_one_transaction_per_batch(tmp_path, commits):
    n = 250
    for i in range(n):
        write(tmp_path, f"d/{i:04d}")
    with Manifest(tmp_path) as m:
        m.DELAY = 3600.0  # only full batches and close() write: the count is exact
        m.put("d/0000", ObjectAttrs(version="first"))
        assert [k for k, _ in m.records()] == ["d/0000"]  # the schema and the record written
        commits.clear()
        for i in range(n):
            m.put(f"d/{i:04d}", ObjectAttrs(version=str(i), source="https://x.org/d"))
    assert len(commits) <= math.ceil(n / 100) + 1  # 250 on one per put
    records = on_disk(tmp_path)
    assert len(records) == n
    assert '"version":"249"' in records["d/0249"]


def test_get_sees_a_record_before_it_is_written(tmp_path):
    a, b = write(tmp_path, "a"), write(tmp_path, "b")
    with Manifest(tmp_path) as m:
        m.DELAY = 3600.0
        m.put(a, ObjectAttrs(version="0"))
        m.flush()
        m.put(a, ObjectAttrs(version="1", etag='"e"'))
        m.put(b, ObjectAttrs(version="2"))
        assert '"version":"0"' in on_disk(tmp_path)["a"]  # not written yet ...
        assert "b" not in on_disk(tmp_path)
        assert m.get("a") == ObjectAttrs(version="1", etag='"e"')  # ... yet seen
        assert "b" in m
        assert [k for k, _ in m.records()] == ["a", "b"]  # records() writes them first
        assert '"version":"1"' in on_disk(tmp_path)["a"]
        m.put(b, ObjectAttrs(version="3"))
        b.write_bytes(b"changed by hand")
        assert m.get("b") is None  # the size rule holds for a batched record too
        m.put(a, ObjectAttrs(version="4"))
        m.remove(a)  # the batch goes first: the removal is not undone by it
        assert m.get(a) is None
    assert "a" not in on_disk(tmp_path)


def test_the_partial_journal_keeps_its_order_with_the_batch(tmp_path):
    final = write(tmp_path, "big.bin")
    with Manifest(tmp_path) as m:
        m.DELAY = 3600.0
        m.put_partial(final, {"validator": '"v1"', "total": 4})
        m.put(final, ObjectAttrs(size=4))  # drops the journal, in the batch
        assert m.get_partial(final) is None
        m.put_partial(final, {"validator": '"v2"', "total": 9})  # a new download began since
        assert m.get_partial(final) == {"validator": '"v2"', "total": 9}
    with Manifest(tmp_path) as m:
        assert m.get_partial(final) == {"validator": '"v2"', "total": 9}
        assert m.get(final) == ObjectAttrs(size=4)


def test_close_writes_the_batch(tmp_path):
    for i in range(5):
        write(tmp_path, f"f{i}")
    m = Manifest(tmp_path)
    m.DELAY = 3600.0
    for i in range(5):
        m.put(f"f{i}", ObjectAttrs(version=str(i)))
    assert len(on_disk(tmp_path)) == 0
    m.close()
    assert sorted(on_disk(tmp_path)) == [f"f{i}" for i in range(5)]


def test_sixteen_threads_put_at_once_and_all_land(tmp_path, commits):
    threads, per = 16, 150
    for t in range(threads):
        for i in range(per):
            write(tmp_path, f"t{t:02d}/{i:03d}", b"x" * (i % 7))
    m = Manifest(tmp_path)
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per):
                m.put(f"t{t:02d}/{i:03d}", ObjectAttrs(size=i % 7, etag=f'"{t}-{i}"'))
                assert m.get(f"t{t:02d}/{i:03d}") == ObjectAttrs(size=i % 7, etag=f'"{t}-{i}"')
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    m.close()
    assert errors == []
    records = on_disk(tmp_path)
    assert len(records) == threads * per
    assert records["t15/149"] == '{"etag":"\\"15-149\\"","size":2}'
    assert len(commits) < threads * per // 10  # batches, not one transaction per put


CHILD = """
import os, sys, time
from dlutils.freshness import Manifest, ObjectAttrs
root, delay, close = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "close"
m = Manifest(root)
m.DELAY = delay
for i in range(250):
    m.put(f"d/{i:04d}", ObjectAttrs(version="1"))
m.flush()
time.sleep(0.05)  # past the clock tick of the first writes: the new files get new mtimes
for i in range(250):
    with open(os.path.join(root, "d", f"{i:04d}"), "wb") as f:
        f.write(b"newer")  # the same size: only the mtime tells them apart
    m.put(f"d/{i:04d}", ObjectAttrs(version="2"))
if close:
    m.close()
print("ready", flush=True)
if sys.argv[3] == "wait":
    time.sleep(600)
"""


def child(tmp_path: Path, delay: float, mode: str) -> subprocess.Popen:
    for i in range(250):
        write(tmp_path, f"d/{i:04d}", b"older")
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(delay), mode],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_process_loses_one_batch_at_most_and_never_a_wrong_file(tmp_path):
    proc = child(tmp_path, 3600.0, "wait")
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    with sqlite3.connect(tmp_path / Manifest.FILENAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    newer = {k for k, v in on_disk(tmp_path).items() if '"version":"2"' in v}
    # The last, unfinished batch went with the process (< 250: a batch really was pending).
    assert 250 - Manifest.BATCH <= len(newer) < 250
    with Manifest(tmp_path) as m:
        for i in range(250):
            key = f"d/{i:04d}"
            # A lost record leaves the one of the older file: no longer valid (its mtime
            # differs), so the file is judged by its size, as pyvo does.
            assert m.get(key) == (ObjectAttrs(version="2") if key in newer else None)


def test_the_interpreter_exit_writes_the_batch_of_a_manifest_never_closed(tmp_path):
    proc = child(tmp_path, 3600.0, "exit")
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out) == (0, "ready\n"), err
    assert sum('"version":"2"' in v for v in on_disk(tmp_path).values()) == 250


def test_the_writer_thread_writes_a_batch_once_it_is_due(tmp_path):
    proc = child(tmp_path, 0.1, "wait")  # puts, then neither flushes nor closes nor exits
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        deadline = time.monotonic() + 60  # DELAY is 0.1 s: generous for a loaded machine
        while sum('"version":"2"' in v for v in on_disk(tmp_path).values()) < 250:
            assert time.monotonic() < deadline, "the batch was never written"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_close_logs_a_batch_it_cannot_write_and_the_manifest_stays_usable(tmp_path, caplog):
    a = write(tmp_path, "a")
    m = Manifest(tmp_path)
    m.DELAY = 3600.0
    m.put(a, ObjectAttrs(version="1"))
    with sqlite3.connect(tmp_path / Manifest.FILENAME) as db:
        db.execute("DROP TABLE objects")  # the batch's INSERT now fails
    m.close()
    assert "cannot write records to" in caplog.text
    assert m.get(a) is None  # lost: the file is judged by its size next time
    m.put(a, ObjectAttrs(version="2"))  # the tables are made again
    m.close()
    assert on_disk(tmp_path) == {"a": '{"version":"2"}'}


def test_a_pickled_copy_sees_the_batch_and_writes_through(tmp_path):
    # What a process executor's worker gets: it may never run atexit, so it keeps no batch.
    a, b = write(tmp_path, "a"), write(tmp_path, "b")
    m = Manifest(tmp_path)
    m.DELAY = 3600.0
    m.put(a, ObjectAttrs(version="1"))
    copy = pickle.loads(pickle.dumps(m))
    assert copy.get(a) == ObjectAttrs(version="1")  # pickling wrote the batch
    copy.put(b, ObjectAttrs(version="2"))
    assert on_disk(tmp_path)["b"] == '{"version":"2"}'  # at once, with no close
    copy.close()
    m.close()
