"""What the "dlutils" logger says at INFO: one line per object placed or skipped, one per
job start and end, nothing else for a normal download, and never a credential."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys

import pytest
from conftest import make_random_bytes

import dlutils
from dlutils import http_download
from dlutils.jobstore import JobStore

DATA = make_random_bytes(3000, seed=11)
SIGNED = "X-Amz-Signature=0123456789abcdefsecret"


def info_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("dlutils") and r.levelno == logging.INFO
    ]


def test_one_info_line_per_object_placed_then_skipped(http_server, tmp_path, caplog):
    http_server.put("data/table.csv", DATA)
    caplog.set_level(logging.INFO, logger="dlutils")
    link = f"{http_server.url}/data/table.csv?{SIGNED}"
    target = tmp_path / "table.csv"
    path = http_download(link, target)
    assert hashlib.sha256(open(path, "rb").read()).digest() == hashlib.sha256(DATA).digest()
    lines = info_lines(caplog)
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"placed {re.escape(str(target))} \(3000 bytes in \d+\.\d\d s\)", lines[0])
    caplog.clear()
    assert http_download(link, target) == str(target)
    assert info_lines(caplog) == [f"{target} is current, skipped"]
    assert "secret" not in caplog.text


def test_a_resume_is_debug_only(http_server, tmp_path, caplog):
    http_server.put("big.bin", DATA)
    part = tmp_path / "big.bin.part"
    part.write_bytes(DATA[:1000])  # no resume record: starts again, said at DEBUG
    caplog.set_level(logging.DEBUG, logger="dlutils")
    http_download(f"{http_server.url}/big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == DATA
    assert len(info_lines(caplog)) == 1
    assert any(r.levelno == logging.DEBUG for r in caplog.records if r.name == "dlutils")


def test_a_job_logs_its_start_each_object_and_its_end(http_server, tmp_path, caplog):
    for i in range(3):
        http_server.put(f"s/{i}.bin", DATA[: 100 * (i + 1)])
    (tmp_path / "1.bin").write_bytes(DATA[:200])  # current by size: skipped
    caplog.set_level(logging.INFO, logger="dlutils")
    job = dlutils.download(http_server.url + "/s/{0..2}.bin", tmp_path, description="three")
    status = job.wait(60)
    dlutils.remove_job(job.id)
    assert (status.finished, status.skipped, status.errors) == (3, 1, 0)
    lines = info_lines(caplog)
    assert lines[0] == f"job {job.id} started: three"
    objects = sorted(lines[1:-1], key=lambda line: line.split(".bin")[0][-1])  # by name
    assert len(objects) == 3
    assert objects[0].startswith(f"placed {tmp_path / '0.bin'} (100 bytes in ")
    assert objects[1] == f"{tmp_path / '1.bin'} is current, skipped"
    assert objects[2].startswith(f"placed {tmp_path / '2.bin'} (300 bytes in ")
    assert re.fullmatch(
        rf"job {job.id} finished: 3 done \(1 skipped\), 0 errors, 400 bytes in \d+\.\d s: three",
        lines[-1],
    )


def test_the_command_lines_v_shows_these_lines_with_the_jobs_own_id(http_server, tmp_path):
    http_server.put("s/0.bin", DATA)
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["DLUTILS_HOME"] = str(tmp_path / "home")
    dest = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlutils",
            "-v",
            "download",
            f"{http_server.url}/s/{{0..0}}.bin",
            str(dest),
            "--wait",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (dest / "0.bin").read_bytes() == DATA
    with JobStore(tmp_path / "home") as store:
        (record,) = store.list()
    lines = [line for line in proc.stderr.splitlines() if line.startswith("INFO dlutils:")]
    assert lines[0].startswith(f"INFO dlutils: job {record.id} started: ")
    assert (
        lines[1]
        == f"INFO dlutils: placed {dest / '0.bin'} (3000 bytes in " + (lines[1].split(" in ", 1)[1])
    )
    assert lines[2].startswith(f"INFO dlutils: job {record.id} finished: 1 done (0 skipped)")
    assert len(lines) == 3, proc.stderr


@pytest.fixture(autouse=True)
def _no_job_left():
    yield
    for job in dlutils.list_jobs():
        job.abort()
