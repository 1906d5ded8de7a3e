"""The lane of small objects (one libcurl multi handle, one thread): every integrity rule
of the engine holds on it, and what it cannot answer plainly the engine fetches.

Each fault kind of the fault suite is met by a job of one small object and of one over
the size where a resume record is kept; error statuses cost the attempts the engine's
retry policy allows, no more; a redirect to another host carries no secret; an abort
and the per-object time limit end its transfers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from collections import Counter

import pytest
from faultproxy import FaultProxy
from test_faults import SEQUENCES, placed_files

import dlutils
from dlutils import State
from dlutils.localserver import LocalServer, stall, status

KiB, MiB = 1 << 10, 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Placed(logging.Handler):
    """The threads that logged each "placed" line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.threads: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("placed "):
            self.threads["lane" if record.threadName.endswith("-lane") else "engine"] += 1


@pytest.fixture
def placed():
    handler = Placed()
    logger = logging.getLogger("dlutils")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.threads
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_small_objects_are_placed_by_the_lane_with_one_request_each(tmp_path, placed):
    objects = {f"d/f{i:03d}.bin": random.Random(i).randbytes(1000 + 97 * i) for i in range(60)}
    with LocalServer(objects) as server:
        status_ = dlutils.download(server.url + "/d/f{000..059}.bin", tmp_path).wait(60)
        assert len(server.requests) == 60
        assert (status_.finished, status_.errors) == (60, 0)
        assert status_.bytes == sum(len(v) for v in objects.values())
        assert placed == Counter({"lane": 60})
        assert placed_files(str(tmp_path)) == {k[2:]: sha(v) for k, v in objects.items()}
        # recorded as the engine records them: a re-run asks with validators, fetches nothing
        server.clear_log()
        again = dlutils.download(server.url + "/d/f{000..059}.bin", tmp_path).wait(60)
        assert {r.status for r in server.requests} == {304}
    assert (again.finished, again.skipped) == (60, 60)


@pytest.mark.parametrize("size", [200 * KiB, MiB + MiB // 2], ids=["small", "resumable"])
@pytest.mark.parametrize("faults", [s for _, s in SEQUENCES], ids=[i for i, _ in SEQUENCES])
def test_one_fault_kind_in_a_job(tmp_path, faults, size):
    data = random.Random(7).randbytes(size)
    other = random.Random(8).randbytes(len(data))
    versions = {"/d/obj.bin": (data, other)}
    with (
        LocalServer({"d/obj.bin": data}) as origin,
        FaultProxy(origin, rate=0, versions=versions) as proxy,
    ):
        proxy.force("/d/obj.bin", *faults)
        job = dlutils.download(
            proxy.url + "/d/obj.bin", str(tmp_path), retries=5, backoff=0.01, timeout=5
        )
        status_ = job.wait(60)
        assert (status_.finished, status_.errors) == (1, 0), status_.download_errors
        assert set(proxy.counts) <= set(faults)
    got = open(tmp_path / "obj.bin", "rb").read()
    if "if_range_ignored" in faults:
        assert sha(got) in (sha(data), sha(other)), "the file is a splice of two versions"
    else:
        assert sha(got) == sha(data)
    assert placed_files(str(tmp_path)) == {"obj.bin": sha(got)}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


@pytest.mark.parametrize("failures, retries, ok", [(2, 2, True), (3, 2, False), (1, 0, False)])
def test_an_error_status_costs_the_attempts_the_policy_allows(tmp_path, failures, retries, ok):
    with LocalServer({"e.bin": b"e" * 500}) as server:
        for _ in range(failures):
            server.add_fault("e.bin", status(500))
        result = dlutils.download(
            server.url_for("e.bin"), tmp_path, retries=retries, backoff=0
        ).wait(60)
        assert len(server.requests_for("e.bin")) == min(failures + 1, retries + 1)
    if ok:
        assert (result.finished, result.errors) == (1, 0)
        assert (tmp_path / "e.bin").read_bytes() == b"e" * 500
    else:
        assert result.errors == 1 and "500 Server Error" in result.download_errors[0][1]
        assert not (tmp_path / "e.bin").exists()


def test_a_missing_object_costs_one_request_and_says_404(tmp_path):
    with LocalServer({}) as server:
        result = dlutils.download(server.url + "/gone.bin", tmp_path).wait(60)
        assert len(server.requests) == 1
    assert result.errors == 1
    assert "404 Client Error" in result.download_errors[0][1]
    assert not [n for n in os.listdir(tmp_path) if not n.startswith(".dlutils-")]


def test_a_redirect_to_another_host_carries_no_secret(tmp_path):
    with LocalServer() as first, LocalServer() as second:
        second.put("store/a.bin", b"a" * 3000)
        first.redirect("a.bin", second.url_for("store/a.bin"))
        secret = {"Authorization": "Bearer s3cr3t", "X-Api-Key": "k3y"}
        result = dlutils.download(first.url_for("a.bin"), tmp_path, headers=secret).wait(60)
        # the lane's answer was a redirect: the engine asked again and followed it
        assert {r.headers.get("Authorization") for r in first.requests} == {"Bearer s3cr3t"}
        assert len(second.requests) == 1
        assert all("Authorization" not in r.headers for r in second.requests)
        assert all("X-Api-Key" not in r.headers for r in second.requests)
    assert (result.finished, result.errors) == (1, 0)
    assert (tmp_path / "a.bin").read_bytes() == b"a" * 3000


def test_abort_ends_the_lane_transfers_and_keeps_no_empty_part(tmp_path):
    objects = {f"s{i}.bin": b"s" * 100_000 for i in range(6)}
    with LocalServer(objects) as server:
        for name in objects:
            server.add_fault(name, stall(30, after_bytes=0, before_headers=True))
        job = dlutils.download(server.url + "/s{0..5}.bin", tmp_path, connections=6)
        deadline = time.monotonic() + 30
        while len(server.requests) < 6:  # all six waiting for their headers
            assert time.monotonic() < deadline, server.requests
            time.sleep(0.01)
        job.abort()
        final = job.wait(15)  # the rule is a second; generous for a loaded machine
    assert final.state is State.ABORTED
    assert final.errors == 0 and final.finished == 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]
    assert job._budget.in_use == 0  # every connection given back


def test_the_time_limit_of_one_attempt_holds_and_is_not_retried(tmp_path):
    with LocalServer({"slow.bin": b"x" * 50_000}) as server:
        server.add_fault("slow.bin", stall(5, after_bytes=1000))
        result = dlutils.download(server.url_for("slow.bin"), tmp_path, timeout=0.5).wait(30)
        assert len(server.requests_for("slow.bin")) == 1
    assert result.errors == 1
    assert "time limit of 0.5 s" in result.download_errors[0][1]
    assert not (tmp_path / "slow.bin").exists()


def test_an_object_over_the_segment_threshold_goes_to_the_engine(tmp_path, placed):
    big, small = random.Random(1).randbytes(3 * MiB), b"small" * 100
    with LocalServer({"d/big.bin": big, "d/small.bin": small}) as server:
        result = dlutils.multi_download(
            [server.url + "/d/big.bin", server.url + "/d/small.bin"],
            tmp_path,
            segment_threshold=MiB,
        )
    assert len(result) == 2
    assert sha((tmp_path / "big.bin").read_bytes()) == sha(big)
    assert (tmp_path / "small.bin").read_bytes() == small
    assert placed == Counter({"lane": 1, "engine": 1})


def test_a_part_file_another_process_holds_does_not_stall_the_other_objects(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    objects = {f"f{i}.bin": bytes([i]) * 5000 for i in range(6)}
    with LocalServer(objects) as server:
        held = os.open(tmp_path / "f0.bin.part", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(held, fcntl.LOCK_EX)  # as a second dlutils process downloading f0.bin
        try:
            job = dlutils.download(server.url + "/f{0..5}.bin", tmp_path, connections=2)
            deadline = time.monotonic() + 30
            while job.status().finished < 5:  # the others are placed while f0 waits
                assert time.monotonic() < deadline, job.status()
                time.sleep(0.01)
            assert not job.status().done
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
            os.close(held)
        final = job.wait(30)
    assert (final.finished, final.errors) == (6, 0)
    for name, data in objects.items():
        assert (tmp_path / name).read_bytes() == data


def test_connections_is_a_hard_cap_in_the_lane_counted_at_the_server(tmp_path):
    objects = {f"f{i:02d}.bin": bytes([i]) * 20_000 for i in range(40)}
    with LocalServer(objects) as server:
        server.rate_limit = 400_000  # slow enough that transfers overlap
        result = dlutils.download(server.url + "/f{00..39}.bin", tmp_path, connections=3)
        final = result.wait(60)
        assert 1 <= server.max_concurrent <= 3
    assert (final.finished, final.errors) == (40, 0)
