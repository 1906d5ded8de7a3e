"""SIGKILL at random moments: nothing corrupt, nothing partial under a final name, re-runs
fetch only what was missing, and dlutils' SQLite files stay sound.

Two kinds of run are killed, ``ROUNDS`` times each at a seeded random moment once bytes
flow: a multi-file job run by the CLI (``dlutils download ... --wait``, so the job store
is written too) and a segmented download of one object (``python -c``). The server is
slowed down (``rate_limit``) while the victim runs, so that every kill lands while it
still transfers, then sped up for the re-run that must complete it. ``pytest -m soak
tests/test_kills.py`` kills more often.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import dlutils
from dlutils.localserver import LocalServer

MiB = 1 << 20
ROUNDS = 10  # per kind of run: 20 kills in all
MANIFEST = ".dlutils-manifest.sqlite"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def env_for(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["DLUTILS_HOME"] = str(home)
    root = os.path.dirname(os.path.dirname(os.path.abspath(dlutils.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def check_placed(dest, objects: dict[str, bytes]) -> set[str]:
    """Every file under a final name equals its source; return the names placed."""
    placed = set()
    for name in os.listdir(dest):
        if name.endswith(".part") or name.startswith(".dlutils-"):
            continue
        with open(os.path.join(dest, name), "rb") as fh:
            got = fh.read()
        assert name in objects, f"unexpected file {name!r} in {dest}"
        assert sha(got) == sha(objects[name]), (
            f"{name} is under its final name but is not the object "
            f"({len(got)} of {len(objects[name])} bytes)"
        )
        placed.add(name)
    return placed


def integrity_ok(path) -> None:
    if not os.path.exists(path):
        return
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path
    finally:
        conn.close()


def bytes_sent(server: LocalServer) -> int:
    return sum(r.bytes_sent for r in server.requests)


def start_victim(argv: list[str], env: dict[str, str], log) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def kill_when_busy(proc: subprocess.Popen, server: LocalServer, delay: float, log) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after the server began sending it bytes."""
    deadline = time.monotonic() + 60
    while bytes_sent(server) == 0:
        assert proc.poll() is None, open(log).read()
        assert time.monotonic() < deadline, "the victim never started downloading"
        time.sleep(0.005)
    time.sleep(delay)
    assert proc.poll() is None, "the victim finished before its kill: slow the server down"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def run_multi_rounds(tmp_path, rounds: int, seed: int) -> dict:
    rng = random.Random(seed)
    data = random.Random(seed + 1)
    # The engine reads 1 MiB at a time: big files get bytes on disk in steps of 1 MiB.
    sizes = [48 * 1024 + i * 997 for i in range(12)] + [5 * MiB // 2 + i for i in range(3)]
    objects = {f"f{i:02d}.bin": data.randbytes(n) for i, n in enumerate(sizes)}
    home = tmp_path / "home"
    missing_total = refetched_total = kept_total = 0
    with LocalServer({f"m/{k}": v for k, v in objects.items()}) as server:
        template = server.url + "/m/f{00..14}.bin"
        for round_ in range(rounds):
            dest = tmp_path / f"multi{round_}"
            argv = [sys.executable, "-m", "dlutils", "download", template, str(dest), "--wait"]
            server.rate_limit = 2 * MiB  # the big ones take >= 1.25 s: the kill lands in time
            server.clear_log()
            log = tmp_path / f"multi{round_}.log"
            victim = start_victim(argv, env_for(home), log)
            kill_when_busy(victim, server, rng.uniform(0.0, 1.1), log)
            placed = check_placed(dest, objects)
            integrity_ok(dest / MANIFEST)
            integrity_ok(home / "jobs.sqlite")
            # Missing: what is neither placed nor in a .part that a resume can use.
            missing = sum(len(v) for k, v in objects.items() if k not in placed)
            kept = sum(os.path.getsize(dest / n) for n in os.listdir(dest) if n.endswith(".part"))
            missing -= kept
            kept_total += kept
            server.rate_limit = None
            server.clear_log()
            rerun = subprocess.run(argv, env=env_for(home), capture_output=True, text=True)
            assert rerun.returncode == 0, rerun.stderr
            assert "resuming" in rerun.stderr.lower(), rerun.stderr  # the interrupted job
            assert check_placed(dest, objects) == set(objects)
            integrity_ok(dest / MANIFEST)
            integrity_ok(home / "jobs.sqlite")
            missing_total += missing
            refetched_total += bytes_sent(server)
            assert not [n for n in os.listdir(dest) if n.endswith(".part")]
    figures = {"kills": rounds, "missing": missing_total, "refetched": refetched_total}
    return {**figures, "kept_in_parts": kept_total}


def run_segmented_rounds(tmp_path, rounds: int, seed: int) -> dict:
    rng = random.Random(seed)
    data = random.Random(seed + 1).randbytes(8 * MiB)
    opts = {"segment_threshold": 2 * MiB, "segments": 4, "retries": 2, "backoff": 0.05}
    # The victim records its progress 10 times a second, in reads of 256 KiB (defaults: once
    # a second, 1 MiB), so that a kill in a CI-fast window finds some of it recorded.
    script = (
        "import sys, dlutils, dlutils.transfer as t\n"
        "with t.tuned(journal_interval=0.1, chunk_size=256 * 1024):\n"
        f"    dlutils.download(sys.argv[1], sys.argv[2], **{opts!r}).wait(120)"
    )
    missing_total = refetched_total = 0
    with LocalServer({"big/obj.bin": data}) as server:
        for round_ in range(rounds):
            dest = tmp_path / f"seg{round_}"
            server.rate_limit = MiB  # four segments of 2 MiB: >= 2 s
            server.clear_log()
            log = tmp_path / f"seg{round_}.log"
            argv = [sys.executable, "-c", script, server.url_for("big/obj.bin"), str(dest)]
            victim = start_victim(argv, env_for(tmp_path / "home"), log)
            kill_when_busy(victim, server, rng.uniform(0.2, 1.8), log)
            placed = check_placed(dest, {"obj.bin": data})
            integrity_ok(dest / MANIFEST)
            server.rate_limit = None
            server.clear_log()
            status = dlutils.download(server.url_for("big/obj.bin"), str(dest), **opts).wait(60)
            assert (status.finished, status.errors) == (1, 0), status.download_errors
            assert check_placed(dest, {"obj.bin": data}) == {"obj.bin"}
            integrity_ok(dest / MANIFEST)
            missing_total += 0 if placed else len(data)
            refetched_total += bytes_sent(server)
    return {"kills": rounds, "missing": missing_total, "refetched": refetched_total}


def report(what: str, figures: dict, record_property) -> float:
    ratio = figures["refetched"] / max(1, figures["missing"])
    print(f"{what}: {figures}, re-fetched / missing = {ratio:.3f}")
    record_property(f"{what}_refetched_ratio", round(ratio, 3))
    return ratio


def test_kill_a_multi_file_cli_job(tmp_path, record_property):
    figures = run_multi_rounds(tmp_path, ROUNDS, seed=1)
    # Small files restart from zero, big ones resume: never much more than what was missing.
    assert report("multi", figures, record_property) < 1.5


def test_kill_a_segmented_download(tmp_path, record_property):
    figures = run_segmented_rounds(tmp_path, ROUNDS, seed=2)
    # What the segments had received before the kill is not fetched again (about half).
    assert report("segmented", figures, record_property) < 0.9


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [21, 22])
def test_soak_kills(tmp_path, record_property, seed):
    assert report("multi", run_multi_rounds(tmp_path, 50, seed), record_property) < 1.5
    assert report("segmented", run_segmented_rounds(tmp_path, 50, seed), record_property) < 0.9
