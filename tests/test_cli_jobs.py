"""The ``dlutils`` job commands, run as real processes against the local HTTP server.

Every test has its own job store (``DLUTILS_HOME`` in ``tmp_path``); jobs started
without ``--wait`` run in detached worker processes, which the ``cli`` fixture kills
at the end of the test if they are still alive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dlutils.jobstore import JobStore, _alive
from dlutils.localserver import stall

MiB = 1 << 20
ID = re.compile(r"^dnl-[0-9a-f]{10}$")


def poll(predicate, timeout=20.0, what="the condition"):
    """Call ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class Cli:
    def __init__(self, tmp_path):
        self.home = tmp_path / "home"
        self.cwd = tmp_path
        self.env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
        self.env["DLUTILS_HOME"] = str(self.home)

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dlutils", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> str:
        """``dlutils download ARGS``: check it returned an id, and return it."""
        proc = self("download", *args)
        assert proc.returncode == 0, proc.stderr
        job_id, hint = proc.stdout.splitlines()
        assert ID.match(job_id), proc.stdout
        assert f"dlutils show download {job_id}" in hint
        return job_id

    def record(self, job_id: str):
        with JobStore(self.home) as store:
            return store.get(job_id)

    def records(self):
        if not self.home.exists():
            return []
        with JobStore(self.home) as store:
            return store.list()

    def kill_workers(self) -> None:
        for record in self.records():
            if record.pid and not record.done and _alive(record.pid, record.host):
                try:
                    os.kill(record.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                poll(lambda r=record: not _alive(r.pid, r.host), 10, "the worker to die")


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


def running_with(cli, job_id, n_current):
    """Wait until the job runs ``n_current`` transfers (kept there by stalls)."""
    return poll(
        lambda: (
            (r := cli.record(job_id)).status.current_tasks
            and len(r.status.current_tasks) == n_current
            and r
        ),
        what=f"{n_current} transfers of {job_id}",
    )


# ---------------------------------------------------------------------------- start, wait, show


def test_start_returns_an_id_then_wait_show_and_a_second_run(cli, server, tmp_path):
    dest = tmp_path / "out"
    job_id = cli.start(server.url + "/d/f{0..3}.bin", str(dest), "--desc", "four files")

    proc = cli("wait", "download", job_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Done: 4 files downloaded, skipped: 0, errors: 0"
    assert sorted(p.name for p in dest.glob("*.bin")) == [f"f{i}.bin" for i in range(4)]
    assert (dest / "f2.bin").read_bytes() == bytes([2]) * 1002

    assert cli("show", "download", "--running").stdout.startswith("No running download jobs")
    table = cli("show", "download").stdout.splitlines()  # all jobs, as `ais show download`
    assert re.match(r"JOB ID +STATUS +ERRORS +DESCRIPTION$", table[0])
    assert re.match(rf"{job_id} +Finished +0 +four files$", table[1])
    assert table[0].index("STATUS") == table[1].index("Finished")

    listed = json.loads(cli("show", "download", "--all", "--json").stdout)
    assert [(j["id"], j["state"], j["finished_cnt"], j["error_cnt"]) for j in listed] == [
        (job_id, "finished", 4, 0)
    ]
    assert listed[0]["dest"] == str(dest) and listed[0]["status"] == "Finished"
    one = cli("show", "download", job_id)
    assert one.stdout.strip() == "Done: 4 files downloaded, skipped: 0, errors: 0"

    # the same download in the foreground: nothing to fetch, all skipped
    server.clear_log()
    again = cli("start", "download", server.url + "/d/f{0..3}.bin", str(dest), "--wait")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "Done: 0 files downloaded, skipped: 4, errors: 0"
    assert all(r.bytes_sent == 0 for r in server.requests)
    assert len(cli.records()) == 2


def test_a_job_with_errors_exits_1_and_lists_them(cli, server, tmp_path):
    job_id = cli.start(server.url + "/d/f{3..4}.bin", str(tmp_path / "out"))
    proc = cli("wait", "download", job_id)
    assert proc.returncode == 1
    assert proc.stdout.strip() == "Done: 1 files downloaded, skipped: 0, errors: 1"
    assert "f4.bin: " in proc.stderr and "404" in proc.stderr
    shown = cli("show", "download", job_id).stdout
    assert "Errors:\n\tf4.bin: " in shown
    assert re.search(rf"{job_id} +Finished +1 ", cli("show", "download", "--all").stdout)

    here = cli("download", server.url + "/d/f4.bin", str(tmp_path / "out"), "--wait")
    assert here.returncode == 1
    assert "Done: 0 files downloaded, skipped: 0, errors: 1" in here.stdout


def test_object_list_and_secrets_reach_the_worker_but_not_the_store(cli, server, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("f1.bin\n\nf3.bin\n")
    secret = "Bearer s3cr3t-t0ken"
    header = f"Authorization: {secret}"
    job_id = cli.start(
        server.url + "/d", str(tmp_path / "out"), "--from", str(names), "--header", header
    )
    assert cli("wait", "download", job_id).returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.bin")) == ["f1.bin", "f3.bin"]
    gets = [r for r in server.requests if r.method == "GET"]
    assert {r.path for r in gets} == {"/d/f1.bin", "/d/f3.bin"}
    assert all(r.headers.get("Authorization") == secret for r in gets)
    assert cli.record(job_id).options["headers"] == ["Authorization"]

    link = server.url.replace("http://", "http://bob:pa55w0rd@") + "/d/f0.bin"
    other = cli.start(link, str(tmp_path / "out"))
    assert cli("wait", "download", other).returncode == 0
    assert server.requests_for("d/f0.bin")[-1].headers["Authorization"].startswith("Basic ")
    record = cli.record(other)
    assert "bob:REDACTED@" in record.source and "bob:REDACTED@" in record.description
    for path in cli.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"s3cr3t" not in data and b"pa55w0rd" not in data, path


# ---------------------------------------------------------------------------- show, stop, rm


def test_show_a_running_job_then_stop_it_from_another_process(cli, server, tmp_path):
    for i in (1, 2):
        server.add_fault(f"d/f{i}.bin", stall(60, after_bytes=10))
    job_id = cli.start(server.url + "/d/f{0..2}.bin", str(tmp_path / "out"), "--desc", "stalls")
    running_with(cli, job_id, 2)

    assert re.search(rf"^{job_id} +2 pending +0 +stalls$", cli("show", "download").stdout, re.M)
    listed = json.loads(cli("show", "download", "--json").stdout)
    assert [(j["id"], j["state"], j["interrupted"]) for j in listed] == [(job_id, "running", False)]
    assert sorted(t["name"] for t in listed[0]["current_tasks"]) == ["f1.bin", "f2.bin"]
    detail = cli("show", "download", job_id, "-v").stdout
    assert f"{job_id} progress: downloaded 1 files (out of 3) (33.33%)" in detail
    assert "Progress of files that are currently being downloaded:" in detail
    assert re.search(r"^\tf1\.bin: .*/.*\(", detail, re.M) and "\tf2.bin: " in detail

    stopped = cli("stop", "download", job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"Stopped download job {job_id}"
    waited = cli("wait", "download", job_id)
    assert waited.returncode == 1
    assert waited.stdout.strip() == "Aborted: 1 files downloaded, skipped: 0, errors: 0"
    assert re.search(rf"^{job_id} +Aborted ", cli("show", "download", "--all").stdout, re.M)
    assert [p.name for p in (tmp_path / "out").glob("*.bin")] == ["f0.bin"]  # .part files stay


def test_rm_refuses_a_running_job_and_removes_finished_ones(cli, server, tmp_path):
    server.add_fault("d/f0.bin", stall(60, after_bytes=10))
    running = cli.start(server.url + "/d/f0.bin", str(tmp_path / "a"))
    done = cli.start(server.url + "/d/f1.bin", str(tmp_path / "b"))
    assert cli("wait", "download", done).returncode == 0
    running_with(cli, running, 1)

    refused = cli("rm", "download", running)
    assert refused.returncode == 1
    assert f"job {running} is 1 pending (running): stop it" in refused.stderr
    removed = cli("rm", "download", done)
    assert removed.returncode == 0 and removed.stdout.strip() == f"Removed download job {done}"
    assert [r.id for r in cli.records()] == [running]
    missing = cli("rm", "download", done)
    assert missing.returncode == 1 and f"no download job {done!r}" in missing.stderr

    other = cli.start(server.url + "/d/f2.bin", str(tmp_path / "c"))
    assert cli("wait", "download", other).returncode == 0
    everything = cli("rm", "download", "--all")
    assert everything.stdout.strip() == "Removed 1 finished download job(s)"
    assert [r.id for r in cli.records()] == [running]


# ---------------------------------------------------------------------------- a killed worker


def test_a_killed_worker_shows_interrupted_and_a_rerun_resumes_it(cli, http_server, tmp_path):
    small = {f"d/f{i}.bin": bytes([i]) * 1000 for i in range(3)}
    big = {f"d/f{i}.bin": os.urandom(5 * MiB // 2) for i in (3, 4)}
    for path, data in {**small, **big}.items():
        http_server.put(path, data)
    for path in big:
        http_server.add_fault(path, stall(60, after_bytes=3 * MiB // 2))
    dest = tmp_path / "out"
    args = (http_server.url + "/d/f{0..4}.bin", str(dest))
    job_id = cli.start(*args)

    def parts_written():
        sizes = {p.name: p.stat().st_size for p in dest.glob("*.part")}
        return len(sizes) == 2 and all(s >= MiB for s in sizes.values()) and sizes

    record = running_with(cli, job_id, 2)
    parts = poll(parts_written, what="the .part files")
    record = poll(lambda: (r := cli.record(job_id)).status.finished == 3 and r)
    os.kill(record.pid, signal.SIGKILL)
    poll(lambda: not _alive(record.pid, record.host), what="the worker to die")

    assert re.search(rf"^{job_id} +Interrupted +0 ", cli("show", "download").stdout, re.M)
    assert "Interrupted: the worker of" in cli("show", "download", job_id).stdout
    assert cli("wait", "download", job_id).returncode == 1

    http_server.clear_log()
    rerun = cli("download", *args, "--wait")
    assert rerun.returncode == 0, rerun.stderr
    assert f"Resuming interrupted job {job_id}" in rerun.stderr
    assert rerun.stdout.strip() == "Done: 2 files downloaded, skipped: 3, errors: 0"
    for path, data in {**small, **big}.items():
        assert (dest / path[2:]).read_bytes() == data
    assert list(dest.glob("*.part")) == []
    for path in small:  # complete files were skipped: no body sent again
        assert all(r.bytes_sent == 0 for r in http_server.requests_for(path))
    for path, data in big.items():  # .part files resumed where they stopped
        name = path[2:]
        bodies = [r for r in http_server.requests_for(path) if r.bytes_sent]
        assert [(r.status, r.range) for r in bodies] == [(206, f"bytes={parts[name + '.part']}-")]
        assert bodies[0].bytes_sent == len(data) - parts[name + ".part"]
    listed = json.loads(cli("show", "download", "--all", "--json").stdout)
    assert [(j["id"], j["state"], j["skipped_cnt"]) for j in listed] == [(job_id, "finished", 3)]


# ---------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        (["show", "uploads"], "argument KIND: invalid choice: 'uploads'"),
        (["download", "URL/f0.bin"], "the following arguments are required: DST"),
        (["download", "URL/f0.bin", "out", "--max-conns", "-1"], "argument --max-conns: -1 is"),
        (["download", "URL/f0.bin", "out", "--limit-bph", "lots"], "argument --limit-bph: size"),
        (["download", "URL/f0.bin", "out", "--timeout", "soon"], "argument --timeout: duration"),
        (["download", "URL/f0.bin", "out", "--header", "Token"], "argument --header: 'Token'"),
        (["download", "URL/f0.bin", "out", "--object-list", "nope.txt"], "argument --object-list"),
        (
            ["download", "URL/f0.bin", "URL/f1.bin", "URL/f2.bin", "out"],
            "unrecognized arguments: URL/f2.bin out; did your shell expand a template? "
            "quote it: dlutils download 'URL/f{0..2}.bin' DST",
        ),
        (["download", "URL/f0.bin", "URL/f1.bin"], "argument DST: 'URL/f1.bin' is a link"),
        (
            ["download", "URL/f0.bin", "memory://bucket/p/"],
            "'memory://bucket/p/' is the memory of one process, gone when the command ends",
        ),
        (
            ["download", "URL/f0.bin", "gs://bucket/p/"],
            "'gs://bucket/p/' is a link, but DST is a local folder or an s3:// prefix",
        ),
        (["download", "ftp://host/f0.bin", "out"], "scheme 'ftp'"),
        (["download", "URL/f0.bin", "out", "--sync"], "sync apply to bucket links"),
        (["show", "download", "--regex", "("], "argument --regex: '(' is not a valid regex"),
        (["stop", "download"], "argument JOB_ID: give a job id, or --regex or --all"),
        (["rm", "download", "dnl-0123456789", "--all"], "argument JOB_ID: give a job id or --all"),
    ],
)
def test_usage_errors_exit_2_and_name_the_argument(cli, http_server, args, message):
    url = http_server.url + "/d"
    proc = cli(*(a.replace("URL", url) for a in args))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message.replace("URL", url) in proc.stderr
    assert cli.records() == []
    assert not (cli.cwd / "out").exists()


def test_an_unknown_job_is_exit_1(cli):
    proc = cli("wait", "download", "dnl-0123456789")
    assert proc.returncode == 1
    assert "no download job 'dnl-0123456789'" in proc.stderr


# ---------------------------------------------------------------------------- the store itself


def test_store_interrupted_by_heartbeat_takeover_and_owner_checks(tmp_path):
    from dlutils import JobStateError
    from dlutils.jobstore import HEARTBEAT_STALE

    now = [1000.0]
    with JobStore(tmp_path, clock=lambda: now[0]) as store:
        request = ("desc", "https://h/a-{0..9}.bin", "/data", {"timeout": None})
        job_id, resumed = store.claim(*request)
        assert not resumed and store.get(job_id).label() == "0 pending"
        with pytest.raises(JobStateError, match="already downloading"):
            store.claim(*request)
        assert store.claim("desc", "https://h/a-{0..9}.bin", "/other")[0] != job_id

        assert store.attach(job_id, os.getpid()) is False
        now[0] += HEARTBEAT_STALE + 1  # no report for too long: interrupted
        record = store.get(job_id)
        assert record.interrupted and record.label() == "Interrupted" and not record.active

        assert store.claim(*request) == (job_id, True)  # a rerun takes the row over
        assert store.get(job_id).pid is None and not store.get(job_id).interrupted
        assert store.beat(job_id, os.getpid()) is True  # the old worker learns it must stop
        store.attach(job_id, os.getpid() + 1)
        assert store.beat(job_id, os.getpid() + 1) is False


def test_a_store_from_a_newer_dlutils_is_refused(tmp_path):
    import sqlite3

    from dlutils import DownloadError

    JobStore(tmp_path).close()
    with sqlite3.connect(tmp_path / JobStore.FILENAME) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DownloadError, match="schema version 99, newer than the 1"):
        JobStore(tmp_path)


# --------------------------------------------------------------------------- HuggingFace flags


def test_hf_dataset_with_a_token_that_is_never_stored(cli, tmp_path):
    from dlutils.sandbox.hf_hub import HubStandIn

    token = "hf_cli_token_never_stored"
    files = {"README.md": b"# hi\n", "data/train.csv": b"a,b\n" * 100}
    with HubStandIn(page_size=2, lfs_threshold=64) as hub:
        hub.add_repo("acme/private", files, private=True, token=token)
        cli.env["HF_ENDPOINT"] = hub.url
        cli.env.pop("HF_TOKEN", None)
        args = ("--hf-dataset", "acme/private", "out", "--hf-auth", token, "--wait")
        proc = cli("download", *args)
        assert proc.returncode == 0, proc.stderr
        assert "Done: 2 files downloaded, skipped: 0, errors: 0" in proc.stdout
        assert (tmp_path / "out" / "data" / "train.csv").read_bytes() == files["data/train.csv"]
        for path in cli.home.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
        assert token not in proc.stdout + proc.stderr
        one = cli(
            "download",
            "--hf-dataset",
            "acme/private",
            "--hf-file",
            "README.md",
            "one",
            "--hf-auth",
            token,
            "--wait",
        )
        assert one.returncode == 0 and (tmp_path / "one" / "README.md").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--hf-file", "x.txt", "http://h/a.bin", "out"], "argument --hf-file"),
        (["--blob-threshold", "1GiB", "http://h/a.bin", "out"], "argument --blob-threshold"),
        (["--hf-dataset", "a/b", "--hf-model", "c/d", "out"], "argument --hf-model"),
        (["--hf-dataset", "a/b", "x", "out"], "with --hf-dataset/--hf-model give only DST"),
        (["--hf-dataset", "a/b"], "required: DST"),
    ],
)
def test_hf_usage_errors(cli, args, match):
    proc = cli("download", *args)
    assert proc.returncode == 2
    assert match in proc.stderr


def test_cache_verified_reruns_with_no_request_and_the_server_down(cli, http_server, tmp_path):
    for i in range(3):
        data = bytes([i]) * (1000 + i)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        http_server.put(f"d/f{i}.bin", data, headers={"Content-MD5": md5})
    src, dst = http_server.url + "/d/f{0..2}.bin", str(tmp_path / "out")
    first = cli("download", src, dst, "--cache", "verified", "--wait")
    assert first.returncode == 0, first.stderr
    http_server.clear_log()
    again = cli("download", src, dst, "--cache", "verified", "--wait")
    assert again.returncode == 0, again.stderr
    assert http_server.requests == []
    http_server.stop()
    down = cli("download", src, dst, "--cache", "verified", "--wait")
    assert down.returncode == 0, down.stderr
    assert "skipped: 3, errors: 0" in down.stdout
    for i in range(3):
        with open(os.path.join(dst, f"f{i}.bin"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == (
                hashlib.sha256(bytes([i]) * (1000 + i)).hexdigest()
            )
    bad = cli("download", src, dst, "--cache", "offline", "--wait")
    assert bad.returncode == 2 and "--cache" in bad.stderr
