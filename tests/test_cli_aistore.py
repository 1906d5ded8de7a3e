"""The ``dlutils`` command as AIStore's CLI behaves (issue 11, items 7-12), as real processes."""

from __future__ import annotations

import hashlib
import re

import pytest
from servers_s3 import moto_server_fixture, s3_fixture, s3_module_fixture  # noqa: F401
from test_cli_jobs import Cli, running_with

from dlutils.localserver import stall


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cli(tmp_path):
    runner = Cli(tmp_path)
    yield runner
    runner.kill_workers()


@pytest.fixture
def server(http_server):
    for i in range(4):
        http_server.put(f"d/f{i}.bin", bytes([i]) * (1000 + i))
    return http_server


# ---------------------------------------------------------------- 7. malformed templates


@pytest.mark.parametrize("name", ["shard-{0..9.tar", "{9..0}", "x{00..19..0}", "{a}"])
def test_a_malformed_template_is_a_usage_error_before_any_job(cli, server, tmp_path, name):
    proc = cli("download", f"{server.url}/d/{name}", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stdout
    assert "argument SRC: template" in proc.stderr and "percent-encoded" in proc.stderr
    assert proc.stdout == "" and cli.records() == [] and server.requests == []


# ---------------------------------------------------------------- 8. show: all jobs


def test_show_download_lists_all_jobs_and_regex_filters_all(cli, server, tmp_path):
    done = cli.start(server.url + "/d/f0.bin", str(tmp_path / "a") + "/", "--desc", "alpha done")
    assert cli("wait", "download", done).returncode == 0
    server.add_fault("d/f1.bin", stall(60, after_bytes=10))
    running = cli.start(server.url + "/d/f1.bin", str(tmp_path / "b") + "/", "--desc", "beta")
    running_with(cli, running, 1)

    table = cli("show", "download").stdout
    assert re.search(rf"^{done} +Finished +0 +alpha done$", table, re.M)
    assert re.search(rf"^{running} +1 pending +0 +beta$", table, re.M)
    assert [
        line.split()[0]
        for line in cli("show", "download", "--regex", "^alpha").stdout.splitlines()[1:]
    ] == [done]
    only = cli("show", "download", "--running").stdout.splitlines()[1:]
    assert [line.split()[0] for line in only] == [running]
    cli("stop", "download", running)


# ---------------------------------------------------------------- 9. durations as AIS writes them


def test_refresh_500_is_milliseconds_and_the_defaults_are_listed(cli, server, tmp_path):
    server.add_fault("d/f1.bin", stall(1.5, after_bytes=10))
    job_id = cli.start(server.url + "/d/f1.bin", str(tmp_path / "out") + "/")
    running_with(cli, job_id, 1)
    shown = cli("show", "download", job_id, "--refresh", "500", timeout=30)
    assert shown.returncode == 0, shown.stderr
    reports = shown.stdout.strip().split("\n\n")
    assert len(reports) >= 2 and reports[-1].startswith("Done: 1 files downloaded")
    for verb in ("show", "wait"):
        text = " ".join(cli(verb, "download", "--help").stdout.split())
        assert "--refresh DURATION time between reports (default 1s)" in text
        assert "a bare number is milliseconds" in text


# ---------------------------------------------------------------- 10. a bar for each file


def test_show_progress_has_a_bar_for_each_file_being_downloaded(cli, server, tmp_path):
    server.put("d/big.bin", b"x" * 200_000)
    server.add_fault("d/big.bin", stall(2, after_bytes=50_000))
    job_id = cli.start(server.url + "/d/{big,f0}.bin", str(tmp_path / "out"))
    running_with(cli, job_id, 1)
    proc = cli("show", "download", job_id, "--progress", "--refresh", "100ms", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"big\.bin: .*\d+(\.\d+)?k?/195k", proc.stderr), proc.stderr  # bytes
    assert f"{job_id} files" in proc.stderr
    assert "Done: 2 files downloaded" in proc.stdout
    assert sha((tmp_path / "out" / "big.bin").read_bytes()) == sha(b"x" * 200_000)


# ---------------------------------------------------------------- 11. DST names the object


def test_a_single_download_saves_the_file_as_dst(cli, server, tmp_path):
    server.put("releases/ubuntu-18.04.1-desktop-amd64.iso", b"iso bytes" * 100)
    url = server.url + "/releases/ubuntu-18.04.1-desktop-amd64.iso"
    proc = cli("download", url, "ubuntu/ubuntu-18.04.1.iso", "--wait")
    assert proc.returncode == 0, proc.stderr
    saved = tmp_path / "ubuntu" / "ubuntu-18.04.1.iso"
    assert saved.is_file() and sha(saved.read_bytes()) == sha(b"iso bytes" * 100)
    assert [p.name for p in (tmp_path / "ubuntu").iterdir() if not p.name.startswith(".")] == [
        "ubuntu-18.04.1.iso"
    ]
    # a trailing / or an existing folder keeps the link's name inside it
    assert cli("download", url, "isos/", "--wait").returncode == 0
    assert cli("download", url, "ubuntu", "--wait").returncode == 0
    for folder in ("isos", "ubuntu"):
        kept = tmp_path / folder / "ubuntu-18.04.1-desktop-amd64.iso"
        assert sha(kept.read_bytes()) == sha(b"iso bytes" * 100)


def test_a_single_s3_object_is_saved_as_dst(s3, cli, tmp_path):
    s3.put("deep/key/table.csv", b"a,b\n1,2\n")
    proc = cli("download", s3.uri("deep/key/table.csv"), "tables/t.csv", "--wait")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (tmp_path / "tables" / "t.csv").read_bytes() == b"a,b\n1,2\n"


# ---------------------------------------------------------------- 12. AIStore's other spellings


def test_aistore_spellings_and_an_empty_timeout(cli, server, tmp_path):
    proc = cli("download", server.url + "/d/f2.bin", str(tmp_path / "o") + "/", "--timeout", "")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split()[0]
    assert cli("wait", "download", job_id, "--timeout", "").returncode == 0
    assert (tmp_path / "o" / "f2.bin").read_bytes() == bytes([2]) * 1002
    assert re.search(rf"^{job_id} +Finished ", cli("show", "job", "download").stdout, re.M)
    assert cli("job", "show", "download", job_id).stdout.startswith("Done: 1 files")
    removed = cli("download", "rm", job_id)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"Removed download job {job_id}"
    assert cli.records() == []
