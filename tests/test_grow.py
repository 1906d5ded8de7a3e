"""Connections that grow: split ranges, re-split stragglers, one connection budget per job.

Correctness of each technique, never its timing: the file equals the source byte for
byte, the plan (as the resume journal records it) covers every byte exactly once, and a
job's ``connections=`` is never exceeded, counted at the server.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

from conftest import make_random_bytes

import dlutils
from dlutils import Job
from dlutils.budget import ConnectionBudget
from dlutils.freshness import Manifest
from dlutils.localserver import LocalServer, stall

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RecordingManifest(Manifest):
    """A real manifest that also keeps a copy of every resume plan written to it."""

    def __init__(self, folder):
        super().__init__(folder)
        self.plans: list[list[list[int]]] = []

    def put_partial(self, path, info):
        self.plans.append([list(seg) for seg in info["segments"]])
        super().put_partial(path, info)


def assert_covers_once(plan: list[list[int]], total: int) -> None:
    """The ranges of ``plan`` hold every byte of ``0..total-1`` exactly once."""
    ranges = sorted(plan)
    assert ranges[0][0] == 0, ranges
    for (_, end, _), (start, _, _) in zip(ranges, ranges[1:], strict=False):
        assert start == end + 1, f"a gap or an overlap at byte {end + 1}: {ranges}"
    assert ranges[-1][1] == total - 1, ranges
    assert all(0 <= done <= end + 1 - start for start, end, done in ranges), ranges


def served_from(server: LocalServer, path: str) -> list[tuple[int, int]]:
    """The byte spans the server sent for ``path``, as (first, last + 1)."""
    spans = []
    for r in server.requests_for(path):
        start = int(re.match(r"bytes=(\d+)-", r.range).group(1)) if r.range else 0
        spans.append((start, start + r.bytes_sent))
    return spans


def test_a_growing_download_equals_the_source_and_covers_every_byte_once(tmp_path, transport):
    data = make_random_bytes(32 * MiB, seed=7)  # two ranges of 16 MiB to begin with
    with LocalServer({"big.bin": data}) as server:
        server.rate_limit = 4 * MiB  # per response: long enough for the plan to grow
        manifest = RecordingManifest(tmp_path)
        path = dlutils.http_download(
            server.url_for("big.bin"),
            tmp_path,
            segment_threshold=32 * MiB,
            manifest=manifest,
            transport=transport,
        )
        spans = served_from(server, "big.bin")
    assert sha(open(path, "rb").read()) == sha(data)
    for plan in manifest.plans:
        assert_covers_once(plan, len(data))
    final = manifest.plans[-1]
    assert all(done == end + 1 - start for start, end, done in final)
    assert len(final) > len(manifest.plans[0]), "the download never grew"
    # At the server: no gap, and no range asked for twice.
    starts = [start for start, _ in spans]
    assert len(starts) == len(set(starts))
    covered = 0
    for start, stop in sorted(spans):
        assert start <= covered, f"bytes {covered}-{start - 1} were never sent"
        covered = max(covered, stop)
    assert covered == len(data)


def test_a_straggler_is_split_and_the_download_finishes(tmp_path, transport):
    data = make_random_bytes(32 * MiB, seed=8)
    with LocalServer({"big.bin": data}) as server:
        # Two ranges of 16 MiB to begin with; the first answer (the whole object, lending
        # the first range) goes silent.
        server.add_fault("big.bin", stall(2, after_bytes=MiB))
        manifest = RecordingManifest(tmp_path)
        path = dlutils.http_download(
            server.url_for("big.bin"),
            tmp_path,
            segment_threshold=32 * MiB,
            manifest=manifest,
            transport=transport,
        )
        spans = served_from(server, "big.bin")
    assert sha(open(path, "rb").read()) == sha(data)
    stalled_end = sorted(manifest.plans[0])[0][1]
    # Another connection took over bytes of the stalled range.
    assert [s for s, _ in spans if MiB < s <= stalled_end], spans
    for plan in manifest.plans:
        assert_covers_once(plan, len(data))


def test_no_range_is_split_where_a_new_request_costs_more_than_it_saves(tmp_path, transport):
    # Every request waits 1 s for its headers (a server that reads the whole object for
    # each range, as moto does, or a slow origin); bodies come at 16 MiB/s. Half of a
    # 16 MiB range then arrives in 0.5 s, sooner than a new request's first byte: the
    # download keeps its first two ranges. Before, it grew and re-split them anyway (on
    # moto: 46 range requests for 256 MiB, 8 x the time of s5cmd).
    data = make_random_bytes(32 * MiB, seed=9)
    with LocalServer({"big.bin": data}) as server:
        server.rate_limit = 16 * MiB
        for _ in range(20):
            server.add_fault("big.bin", stall(1.0, before_headers=True))
        path = dlutils.http_download(
            server.url_for("big.bin"), tmp_path, segment_threshold=32 * MiB, transport=transport
        )
        spans = served_from(server, "big.bin")
    assert sha(open(path, "rb").read()) == sha(data)
    assert len(spans) == 2, spans


def test_a_job_never_exceeds_its_connections_at_the_server(tmp_path):
    files = {f"j/{i}.bin": make_random_bytes(8 * MiB + i, seed=i) for i in range(3)}
    files.update({f"j/{i}.bin": make_random_bytes(1000 + i, seed=i) for i in range(3, 12)})
    with LocalServer(files) as server:
        template = server.url + "/j/{0..11}.bin"
        job = Job.range(template, tmp_path, connections=4, segment_threshold=MiB)
        result = job.start().wait(120)
        most = server.max_concurrent
        ranged = [r for r in server.requests if r.range]
    assert (result.finished, result.errors) == (12, 0)
    for name, data in files.items():
        assert sha((tmp_path / os.path.basename(name)).read_bytes()) == sha(data)
    assert ranged, "no big file was fetched in ranges"
    assert most <= 4


def test_a_big_file_grows_into_the_slots_small_files_free_and_no_further(tmp_path):
    big = make_random_bytes(32 * MiB, seed=11)
    files = {"g/0.bin": big, **{f"g/{i}.bin": b"small %d" % i for i in range(1, 8)}}
    with LocalServer(files) as server:
        server.rate_limit = 8 * MiB  # per response: the big file takes a second or more
        template = server.url + "/g/{0..7}.bin"
        job = Job.range(template, tmp_path, connections=4, segment_threshold=32 * MiB)
        result = job.start().wait(120)
        most = server.max_concurrent
        ranged = [r.range for r in server.requests if r.range]
    assert (result.finished, result.errors) == (8, 0)
    assert sha((tmp_path / "0.bin").read_bytes()) == sha(big)
    assert len(ranged) >= 2, f"the big file never grew past its first two ranges: {ranged}"
    assert most <= 4


def test_a_connection_budget_is_a_hard_cap():
    budget = ConnectionBudget(2)
    held = budget.hold()
    assert budget.try_acquire() and not budget.try_acquire()
    budget.release()
    held.close()
    assert (budget.in_use, budget.peak) == (0, 2)
    abort = threading.Event()
    abort.set()
    for _ in range(2):
        budget.acquire()
    try:
        budget.acquire(abort)
    except dlutils.DownloadAborted as exc:
        assert "waiting for a free connection" in str(exc)
    else:
        raise AssertionError("acquire() went past a full budget")


def test_a_killed_download_resumes_from_its_split_plan(tmp_path):
    data = make_random_bytes(32 * MiB, seed=9)
    dest = tmp_path / "out"
    script = (
        "import sys, dlutils, dlutils.transfer as t\n"
        "with t.tuned(journal_interval=0.1):\n"
        "    dlutils.http_download(sys.argv[1], sys.argv[2], segment_threshold=32 << 20)"
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["DLUTILS_HOME"] = str(tmp_path / "home")
    root = os.path.dirname(os.path.dirname(os.path.abspath(dlutils.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    with LocalServer({"big.bin": data}) as server:
        server.rate_limit = 2 * MiB
        os.makedirs(dest)
        target = str(dest / "big.bin")
        victim = subprocess.Popen(
            [sys.executable, "-c", script, server.url_for("big.bin"), target], env=env
        )
        try:
            deadline = time.monotonic() + 60
            first = None
            while True:  # until the journal holds a split plan
                assert victim.poll() is None, "the victim ended before it split a range"
                assert time.monotonic() < deadline, "the plan never grew"
                info = Manifest(dest).get_partial(target)
                if info and first is None:
                    first = len(info["segments"])
                if info and len(info["segments"]) > first:
                    break
                time.sleep(0.05)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        plan = Manifest(dest).get_partial(target)["segments"]
        assert_covers_once(plan, len(data))
        kept = sum(done for _, _, done in plan)
        server.rate_limit = None
        server.clear_log()
        dlutils.http_download(server.url_for("big.bin"), target, segment_threshold=32 * MiB)
        refetched = sum(r.bytes_sent for r in server.requests)
    assert sha(open(target, "rb").read()) == sha(data)
    assert kept > 0 and refetched <= len(data) - kept + 8 * MiB
