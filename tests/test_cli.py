"""Tests for the ``dlutils`` command line and the offline demo it runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import dlutils
from dlutils.demo import make_dataset, run_demo


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dlutils", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_downloads_every_file_then_nothing(tmp_path):
    dest = tmp_path / "out"
    proc = run_cli("demo", "--dest", str(dest), "--files", "5", "--size", "1000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = {name.rsplit("/", 1)[-1]: body for name, body in make_dataset(5, 1000).items()}
    got = {p.name: p.read_bytes() for p in dest.glob("*.bin")}
    assert sorted(got) == [f"shard-{i:03d}.bin" for i in range(5)]
    assert {name: len(body) for name, body in got.items()} == dict.fromkeys(expected, 1000)
    assert got == expected
    assert list(dest.rglob("*.part")) == []
    assert re.search(
        r"first run:  dnl-\w+ finished: 5 files downloaded, skipped: 0, errors: 0", proc.stdout
    )
    assert re.search(
        r"second run: dnl-\w+ finished: 0 files downloaded, skipped: 5, errors: 0", proc.stdout
    )
    assert "sent 0 bodies and answered 5 requests with 304 Not Modified" in proc.stdout


def test_no_command_prints_help_and_exits_2(tmp_path):
    proc = run_cli(cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: dlutils" in proc.stdout and "demo" in proc.stdout


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--files", "0"], "--files must be >= 1"),
        (["--files", "-3"], "--files must be >= 1"),
        (["--size", "-1"], "--size >= 0"),
        (["--files", "many"], "argument --files: invalid int value: 'many'"),
    ],
)
def test_demo_rejects_bad_arguments_with_exit_2(tmp_path, args, match):
    proc = run_cli("demo", "--dest", str(tmp_path / "d"), *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert match in proc.stderr
    assert not (tmp_path / "d").exists()


def test_version(tmp_path):
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"dlutils {dlutils.__version__}"


def test_run_demo_in_process(tmp_path):
    lines: list[str] = []
    dest = tmp_path / "d"
    first, second = run_demo(str(dest), files=3, size=10, progress=False, echo=lines.append)
    assert (first.files, first.bodies_sent, first.bytes_sent) == (3, 3, 30)
    assert (second.files, second.bodies_sent, second.not_modified, second.bytes_sent) == (
        3,
        0,
        3,
        0,
    )
    assert sorted(p.name for p in dest.glob("*.bin")) == [f"shard-{i:03d}.bin" for i in range(3)]
    assert (first.status.skipped, second.status.skipped, second.status.finished) == (0, 3, 3)
    assert len(lines) == 5
    assert lines[0].startswith("serving 3 files of 10 bytes at http://127.0.0.1:")
    assert lines[1].endswith("(3 names)")
    assert "finished: 0 files downloaded, skipped: 3, errors: 0" in lines[3]
