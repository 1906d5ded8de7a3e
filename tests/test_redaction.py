"""No credential leaves dlutils: not in exceptions, logs, warnings, statuses, CLI output or files.

Links carry a signed query (``X-Amz-Signature=``, ``token=``) and a password; every
failure below (a host that refuses connections, a 403, a 404) is grepped for them
everywhere dlutils writes, at DEBUG level.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import traceback
import warnings

import pytest
import requests
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401 - fixtures

import dlutils
from dlutils import JobFailedError, http_download, multi_download
from dlutils.localserver import status
from dlutils.redaction import RedactingFilter, redacted

SECRETS = ("SIGSECRET1", "TOKSECRET2", "PWSECRET3")
QUERY = f"X-Amz-Signature={SECRETS[0]}&token={SECRETS[1]}&part=1"


def signed(base: str, path: str) -> str:
    """``base``'s link to ``path`` with a password and a signed query."""
    return base.replace("http://", f"http://bob:{SECRETS[2]}@") + f"/{path}?{QUERY}"


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]  # closed on exit: nothing listens there any more


def assert_clean(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in SECRETS:
        assert secret.encode() not in data, f"{secret} leaked in {where}: {data[:2000]!r}"


def everything_about(exc: BaseException) -> str:
    """What a user may see of an exception: str, repr, the whole traceback with its chain."""
    chain, seen = [], exc
    while seen is not None:
        chain.append(f"{seen}\n{seen!r}\n{seen.args!r}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join([*chain, "".join(traceback.format_exception(exc))])


def files_under(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture
def failing_links(http_server):
    """Three links that fail: a host that refuses connections, a 403, a 404."""
    http_server.put("forbidden.bin", b"x")
    http_server.add_fault("forbidden.bin", status(403, body=b"Forbidden\n"))
    return {
        "refused.bin": signed(f"http://127.0.0.1:{closed_port()}", "refused.bin"),
        "forbidden.bin": signed(http_server.url, "forbidden.bin"),
        "gone.bin": signed(http_server.url, "gone.bin"),
    }


@pytest.mark.parametrize("which", ["refused.bin", "forbidden.bin", "gone.bin"])
def test_a_failed_download_leaks_no_secret_anywhere(failing_links, which, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises((requests.RequestException, dlutils.DownloadError)) as info:
            http_download(failing_links[which], tmp_path, retries=1, sleep=lambda s: None)
    assert_clean(everything_about(info.value), "the exception")
    assert_clean(caplog.text, "the log")
    assert_clean("\n".join(str(w.message) for w in caught), "the warnings")
    for path in files_under(tmp_path):
        assert_clean(path.read_bytes(), str(path))
    if which == "refused.bin":  # the type stays, for pyvo users who catch it
        assert isinstance(info.value, requests.ConnectionError)
        assert "X-Amz-Signature=REDACTED&token=REDACTED" in str(info.value)


def test_a_job_leaks_no_secret_in_its_status_errors_or_manifest(failing_links, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    job = dlutils.download(failing_links, tmp_path, retries=1, backoff=0.01)
    status_ = job.wait(60)
    assert status_.errors == 3
    shown = json.dumps(status_.to_dict())
    assert_clean(shown + repr(job) + job.description, "the status")
    assert "REDACTED" in shown
    with pytest.raises(JobFailedError) as info:
        multi_download(failing_links, tmp_path, retries=1, backoff=0.01)
    assert_clean(everything_about(info.value), "JobFailedError")
    assert_clean(caplog.text, "the log")
    for path in files_under(tmp_path):
        assert_clean(path.read_bytes(), str(path))


def test_the_log_filter_redacts_messages_arguments_and_exceptions(caplog):
    caplog.set_level(logging.DEBUG, logger="dlutils")
    log = logging.getLogger("dlutils")
    try:
        try:
            raise OSError(f"cannot reach /a.bin?{QUERY}")
        except OSError as exc:
            raise requests.ConnectionError(exc) from exc
    except requests.ConnectionError:
        log.warning("fetching %s failed", f"https://h/a.bin?{QUERY}", exc_info=True)
    log.debug("header Authorization: Bearer %s", SECRETS[1])
    assert_clean(caplog.text, "the log")
    record = caplog.records[0]
    assert (
        record.getMessage()
        == "fetching https://h/a.bin?X-Amz-Signature=REDACTED&token=REDACTED&part=1 failed"
    )
    assert isinstance(record.exc_info[1], requests.ConnectionError)  # handlers still get one
    assert_clean(everything_about(record.exc_info[1]), "the record's exception")
    assert any(isinstance(f, RedactingFilter) for f in log.filters)


def test_redacted_keeps_the_type_the_attributes_and_a_clean_chain():
    response = requests.Response()
    response.status_code = 403
    cause = OSError(f"GET /a.bin?{QUERY}")
    exc = requests.HTTPError(f"403 for https://h/a.bin?{QUERY}", response=response)
    exc.__cause__ = cause
    clean = redacted(exc)
    assert type(clean) is requests.HTTPError and clean.response is response
    assert_clean(everything_about(clean), "the copy")
    assert "X-Amz-Signature=REDACTED" in str(clean.__cause__)
    harmless = ValueError("nothing secret")
    assert redacted(harmless) is harmless


# ----------------------------------------------------------------------------- the CLI


def run_cli(
    home, *args: str, command=("-m", "dlutils"), timeout: float = 60, **popen
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["DLUTILS_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, *command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def test_the_cli_leaks_no_secret_in_its_output_store_logs_or_files(failing_links, tmp_path):
    home, dest = tmp_path / "home", tmp_path / "out"
    # the refused host is retried (about 10 s of pauses): its job runs detached meanwhile
    detached = run_cli(home, "download", failing_links["refused.bin"], str(dest), cwd=tmp_path)
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.split()[0]
    outputs = [detached.stdout, detached.stderr]
    for which in ("forbidden.bin", "gone.bin"):
        link = failing_links[which]
        here = run_cli(home, "-v", "download", link, str(dest / which), "--wait", cwd=tmp_path)
        assert here.returncode == 1 and "REDACTED" in here.stderr, here.stderr
        outputs += [here.stdout, here.stderr]
    extra = run_cli(
        home, "download", failing_links["gone.bin"], str(dest), failing_links["gone.bin"]
    )
    assert extra.returncode == 2 and "unrecognized arguments" in extra.stderr
    waited = run_cli(home, "wait", "download", job_id, cwd=tmp_path)
    assert waited.returncode == 1 and "ConnectionError" in waited.stderr, waited.stderr
    shown = run_cli(home, "show", "download", job_id, "--json", "-v", cwd=tmp_path)
    table = run_cli(home, "show", "download", "--all", "-v", cwd=tmp_path)
    outputs += [extra.stdout, extra.stderr, waited.stdout, waited.stderr]
    outputs += [shown.stdout, shown.stderr, table.stdout, table.stderr]
    assert "X-Amz-Signature=REDACTED" in shown.stdout
    assert_clean("\n".join(outputs), "the CLI's output")
    for path in files_under(tmp_path):  # the job store, the worker's log, the manifest
        assert_clean(path.read_bytes(), str(path))


FULL_DISK = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["dlutils", *sys.argv[2:]]
runpy.run_module("dlutils", run_name="__main__")
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new store", "existing store"])
def test_a_job_store_on_a_full_disk_is_a_clear_error_exit_1(tmp_path, http_server, existing):
    http_server.put("a.bin", b"a")
    link = signed(http_server.url, "a.bin")
    if existing:
        assert run_cli(tmp_path / "home", "show", "download").returncode == 0
    # the disk is full: no file may grow (the existing store: past one page of its journal)
    full = ("-c", FULL_DISK, "4096" if existing else "0")
    proc = run_cli(tmp_path / "home", "download", link, str(tmp_path / "o"), command=full)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("dlutils: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert_clean(proc.stderr, "stderr")


def test_a_read_only_job_store_is_a_clear_error_exit_1(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    run_cli(home, "show", "download")  # the store exists
    os.chmod(home, 0o500)
    os.chmod(home / "jobs.sqlite", 0o400)
    try:
        if os.access(home / "jobs.sqlite", os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        proc = run_cli(home, "download", "http://127.0.0.1:9/a.bin", str(tmp_path / "o"))
    finally:
        os.chmod(home, 0o700)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("dlutils: error: ") and "Traceback" not in proc.stderr


def test_a_request_given_as_json_text_is_refused_without_echoing_its_secrets(tmp_path):
    body = json.dumps(
        {
            "type": "single",
            "link": signed("http://127.0.0.1:9", "a.bin"),
            "headers": {"X-Api-Key": SECRETS[1]},
        }
    )
    with pytest.raises(dlutils.InvalidInputError, match="expected a JSON object") as refused:
        dlutils.Job.from_request(body, tmp_path)
    assert_clean(everything_about(refused.value), "the refusal of a request given as text")


@pytest.mark.parametrize(
    "path", ["f{1..3x.bin", "f{3..1}.bin", "{1..3}/x.bin"], ids=["unclosed", "reversed", "folder"]
)
def test_a_malformed_template_is_refused_without_echoing_its_secrets(tmp_path, path):
    template = signed("http://127.0.0.1:9", path)
    with pytest.raises(dlutils.InvalidInputError, match="template 'http://bob:") as refused:
        dlutils.download(template, tmp_path)
    assert_clean(everything_about(refused.value), "the refusal of a malformed template")


def test_botocores_debug_lines_hold_no_session_token(tmp_path, monkeypatch, caplog, s3):
    # botocore logs every request it sends with its headers (X-Amz-Security-Token among
    # them) and the canonical request it signs: lines of dlutils' S3 requests, as urllib3's.
    s3.put("k/a.bin", b"x" * 1000)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRETS[1])
    caplog.set_level(logging.DEBUG)
    dlutils.aws_download(s3.uri("k/a.bin"), local_filepath=tmp_path / "a.bin", cache=False)
    assert any(r.name.startswith("botocore") for r in caplog.records)
    assert_clean("\n".join(r.getMessage() for r in caplog.records), "botocore's log records")


@pytest.mark.parametrize("entry", ["download", "range"])
def test_a_template_without_a_scheme_never_shows_its_password(tmp_path, entry):
    template = "bob:hunter2@host.example/x-{0..3}.bin"
    start = dlutils.download if entry == "download" else dlutils.Job.range
    with pytest.raises(dlutils.DownloadError) as caught:
        start(template, tmp_path)
    assert "hunter2" not in str(caught.value) and "bob:REDACTED@" in str(caught.value)


def test_botocores_signature_line_is_redacted(caplog):
    signature = "3f9a1c2e0b5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f"
    with caplog.at_level(logging.DEBUG, logger="botocore.auth"):
        logging.getLogger("botocore.auth").debug("Signature:\n%s", signature)
    assert caplog.records and signature not in caplog.text
    assert "Signature: REDACTED" in caplog.text
