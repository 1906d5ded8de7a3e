"""Downloads through a fault-injecting proxy end with every placed file byte-identical.

``tests/faultproxy.py`` sits between dlutils and a LocalServer and breaks answers in
every way listed there. One focused test per fault kind, then a 1,000-file job at 20%
faults; ``pytest -m soak tests/test_faults.py`` runs the longer soak (more files, 50%
faults, several seeds).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter

import pytest
from faultproxy import DEFAULT_KINDS, FaultProxy

import dlutils
from dlutils.localserver import LocalServer

MiB = 1 << 20
#: Job options for a faulty server: many quick retries, a short per-object timeout.
FAST = {"retries": 12, "backoff": 0.02, "timeout": 5, "segment_threshold": MiB}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def placed_files(folder: str) -> dict[str, str]:
    """sha256 of every file under a final name (``.part`` and dlutils' own files left out)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name.endswith(".part") or name.startswith(".dlutils-"):
                continue
            full = os.path.join(root, name)
            with open(full, "rb") as fh:
                found[os.path.relpath(full, folder).replace(os.sep, "/")] = sha(fh.read())
    return found


# -- one fault at a time ------------------------------------------------------------------

#: (test id, faults forced on the path's requests in order). A leading "reset" makes the
#: fault under test hit the resume (a Range + If-Range request): the object is 1.5 MiB,
#: over the size where the engine records a partial download for resuming.
SEQUENCES = [
    ("reset", ["reset", "reset"]),
    ("truncate", ["truncate", "truncate"]),
    ("stall", ["stall"]),
    ("stall_headers", ["stall_headers"]),
    ("status_500", ["status_500", "status_500"]),
    ("status_503", ["status_503"]),
    ("status_503_ra", ["status_503_ra"]),
    ("status_429", ["status_429"]),
    ("status_429_ra", ["status_429_ra", "status_429_ra"]),
    ("length_short", ["reset", "length_short"]),
    ("length_long", ["length_long"]),
    ("length_long_on_resume", ["reset", "length_long"]),
    ("content_range_whole", ["content_range"]),
    ("content_range_on_resume", ["reset", "content_range"]),
    ("extra_bytes_200", ["extra_bytes"]),
    ("extra_bytes_206", ["reset", "extra_bytes"]),
    ("range_ignored", ["reset", "range_ignored"]),
    ("gzip", ["gzip"]),
    ("if_range_ignored", ["if_range_ignored"]),
]
#: The same for a segmented download (three ranges of 512 KiB, fetched at once): "none"
#: lets the first request through, so the fault hits one of the segments' requests.
SEGMENTED = [
    ("reset", ["none", "reset", "reset"]),
    ("truncate", ["none", "truncate"]),
    ("status_503_ra", ["none", "status_503_ra"]),
    ("length_short", ["none", "length_short"]),
    ("length_long", ["none", "length_long"]),
    ("content_range", ["none", "content_range"]),
    ("extra_bytes", ["none", "extra_bytes"]),
    ("range_ignored", ["none", "range_ignored"]),
    ("gzip", ["gzip"]),
    ("if_range_ignored", ["if_range_ignored"]),
]
CASES = [(i, s, {}) for i, s in SEQUENCES]
CASES += [(f"segments-{i}", s, {"segment_threshold": MiB}) for i, s in SEGMENTED]


@pytest.mark.parametrize("faults, opts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_fault_kind(tmp_path, faults, opts, transport):
    data = random.Random(7).randbytes(MiB + MiB // 2)
    other = random.Random(8).randbytes(len(data))  # a second version, the same size
    versions = {"/d/obj.bin": (data, other)}
    with (
        LocalServer({"d/obj.bin": data}) as origin,
        FaultProxy(origin, rate=0, versions=versions) as proxy,
    ):
        proxy.force("/d/obj.bin", *faults)
        path = dlutils.http_download(
            proxy.url + "/d/obj.bin",
            str(tmp_path),
            retries=5,
            backoff=0.01,
            timeout=5,
            transport=transport,
            **opts,
        )
        got = open(path, "rb").read()
        injected = set(faults) - {"none"}
        assert set(proxy.counts) == injected, f"not every fault was injected: {proxy.log}"
        if opts and "gzip" not in faults:  # an unasked encoding is decoded whole, never in pieces
            assert sum(e.range is not None for e in proxy.log) >= 2, "no segments were asked for"
    if "if_range_ignored" in faults:
        assert sha(got) in (sha(data), sha(other)), "the file is a splice of two versions"
    else:
        assert sha(got) == sha(data)
    assert placed_files(str(tmp_path)) == {"obj.bin": sha(got)}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part")]


def test_stall_longer_than_the_timeout_is_retried(tmp_path, transport):
    data = random.Random(9).randbytes(300_000)
    with (
        LocalServer({"d/slow.bin": data}) as origin,
        FaultProxy(origin, rate=0, long_stall_seconds=2.0) as proxy,
    ):
        proxy.force("/d/slow.bin", "stall_long")
        path = dlutils.http_download(
            proxy.url + "/d/slow.bin",
            str(tmp_path),
            retries=3,
            backoff=0.01,
            timeout=0.5,
            transport=transport,
        )
        assert proxy.counts == Counter({"stall_long": 1})
    assert sha(open(path, "rb").read()) == sha(data)


def test_a_fault_every_time_is_reported_and_nothing_is_placed(tmp_path):
    data = random.Random(10).randbytes(200_000)
    with LocalServer({"d/bad.bin": data}) as origin, FaultProxy(origin, rate=0) as proxy:
        proxy.force("/d/bad.bin", *["status_500"] * 10)
        job = dlutils.download(proxy.url + "/d/bad.bin", str(tmp_path), retries=2, backoff=0.01)
        status = job.wait(60)
    assert (status.finished, status.errors) == (0, 1)
    assert status.download_errors[0][0] == "bad.bin"
    assert placed_files(str(tmp_path)) == {}


# -- a whole job ---------------------------------------------------------------------------


def make_objects(n: int, seed: int) -> dict[str, bytes]:
    """``n`` objects of 2 KiB to ~300 KiB (log-uniform), one in 16 of 1 to 2 MiB."""
    rng = random.Random(seed)
    sizes = [int(2 ** rng.uniform(11, 18.2)) for _ in range(n)]
    for i in range(0, n, 16):  # over segment_threshold: segmented, journaled, resumed
        sizes[i] = MiB + rng.randrange(MiB)
    return {f"d/f{i:04d}.bin": rng.randbytes(size) for i, size in enumerate(sizes)}


def run_faulty_job(tmp_path, n: int, rate: float, seed: int, changing: int = 30) -> dict:
    """Download ``n`` objects through the proxy; check every file; return the figures."""
    objects = make_objects(n, seed)
    names = sorted(objects)
    versions = {}
    big = [name for name in names if len(objects[name]) > MiB]  # resumed: If-Range matters
    for name in random.Random(seed).sample(big, min(changing, len(big))):
        other = random.Random(f"{seed}:{name}").randbytes(len(objects[name]))
        versions["/" + name] = (objects[name], other)
    dest = tmp_path / f"dest-{seed}"
    with (
        LocalServer(objects) as origin,
        FaultProxy(
            origin, rate=rate, seed=seed, versions=versions, stall_seconds=0.2, retry_after="0"
        ) as proxy,
    ):
        # Each kind at least once, whatever the draws: forced on the first big files (after
        # one untouched request for the kinds only segment requests can meet).
        fixed = [name for name in big if "/" + name not in versions]
        for kind, name in zip(DEFAULT_KINDS, fixed, strict=False):
            if kind == "if_range_ignored":
                name = sorted(versions)[0][1:]
            ahead = ["none"] if kind in ("length_short", "range_ignored") else []
            proxy.force("/" + name, *ahead, kind)
        template = proxy.url + f"/d/f{{0000..{n - 1:04d}}}.bin"
        status = dlutils.download(template, str(dest), **FAST).wait(600)
        counts, faults, log = dict(proxy.counts), proxy.faults, list(proxy.log)
    placed = placed_files(str(dest))
    corrupt = []
    for rel, digest in placed.items():
        key = "d/" + rel
        allowed = {sha(v) for v in versions.get("/" + key, (objects.get(key, b"?"),))}
        if digest not in allowed:
            corrupt.append(rel)
    failed = {name for name, _ in status.download_errors}
    missing = [n for n in names if n[2:] not in placed and n[2:] not in failed]
    figures = {
        "files": n,
        "fault_rate": rate,
        "seed": seed,
        "faults": faults,
        "faults_by_kind": dict(sorted(counts.items())),
        "checked": len(placed),
        "corrupt": len(corrupt),
        "finished": status.finished,
        "errors": status.errors,
        "errors_sample": status.download_errors[:5],
        # The faults the corrupt files met: what to look at first when this test fails.
        "faults_of_corrupt": dict(
            Counter(e.fault for e in log if e.fault and e.path[3:] in set(corrupt))
        ),
    }
    print(figures)
    assert corrupt == [], f"{len(corrupt)} placed files differ from their source: {corrupt[:10]}"
    assert status.finished + status.errors == n, figures
    assert missing == [], f"objects neither placed nor reported: {missing[:10]}"
    assert not failed & set(placed), "an object reported as failed sits under its final name"
    return figures


def test_a_thousand_files_at_20_percent_faults(tmp_path, record_property):
    figures = run_faulty_job(tmp_path, 1000, 0.2, seed=1)
    for key, value in figures.items():
        record_property(key, value)
    # Every kind was really injected.
    assert set(figures["faults_by_kind"]) == set(DEFAULT_KINDS), figures["faults_by_kind"]
    assert figures["faults"] >= 150


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_soak_faults(tmp_path, seed):
    figures = run_faulty_job(tmp_path, 3000, 0.5, seed=seed, changing=100)
    assert set(figures["faults_by_kind"]) == set(DEFAULT_KINDS)
