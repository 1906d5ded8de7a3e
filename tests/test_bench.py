"""A smoke run of the benchmark suite (``python -m bench``): it starts nginx, runs dlutils
and curl once on 200 small files, checks each output, and writes its JSON. Times are
reported, never judged here."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")) or not shutil.which("curl"),
    reason="the benchmark suite needs nginx and curl (apt-get install nginx curl)",
)


def test_quick_range_scenario_runs_and_every_output_is_checked(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenarios", "S", "--repeat", "1",
         "--tools", "dlutils,curl", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bench = json.loads(out.read_text())
    [group] = bench["benchmarks"]
    results = {r["tool"]: r for r in group["results"]}
    # dlutils and the reference ran, their outputs passed the sha256 check, a ratio came out
    assert results["dlutils range job"]["seconds"] > 0, results["dlutils range job"]
    assert results["curl --parallel"]["ratio"] == 1.0
    assert results["dlutils range job"]["ratio"] > 0
    assert not [r for r in group["results"] if r.get("note", "").startswith("failed")]
    assert "S: 200 files of 64 KiB" in done.stdout and "dlutils range job" in done.stdout
    assert bench["machine"]["nproc"] == os.cpu_count()
