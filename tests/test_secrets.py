"""No secret leaves dlutils: not in logs, warnings, exceptions, status, CLI output, files.

Links carry a signed query (``X-Amz-Signature``, ``token``) and a userinfo password, and
a custom ``X-Api-Key`` header goes along. They are sent to (a) a closed port, (b) a
server answering 403 and (c) a server redirecting to another one on another port.
Everything dlutils writes or prints is then searched for the secret values: log records
of the ``dlutils`` logger at DEBUG, warnings, the exception's str, repr and formatted
traceback (its causes included), ``status().to_dict()``, the CLI's stdout and stderr
(``download --wait``, ``show download --json -v``), every file under the job store and
the destination (manifest included), and what the second server received.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import traceback
import warnings

import pytest

import dlutils
from dlutils.localserver import LocalServer, status

SIG, TOK, PW, KEY = "SECRETSIG123", "SECRETTOK456", "SECRETPW789", "SECRETKEY000"
BASIC = base64.b64encode(f"alice:{PW}".encode()).decode()  # what userinfo becomes on the wire
SECRETS = (SIG, TOK, PW, KEY, BASIC)
HEADERS = {"X-Api-Key": KEY}


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return [s for s in SECRETS if s in text]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def secret_link(port: int, path: str) -> str:
    query = f"X-Amz-Signature={SIG}&token={TOK}&part=1"
    return f"http://alice:{PW}@127.0.0.1:{port}/{path}?{query}"


@pytest.fixture
def servers():
    """(first, second): the first redirects r.bin to the second and answers 403 for f.bin."""
    with LocalServer() as first, LocalServer() as second:
        second.put("r.bin", b"redirected content\n")
        first.redirect("r.bin", second.url_for("r.bin"))
        first.put("f.bin", b"forbidden\n")
        for _ in range(50):
            first.add_fault("f.bin", status(403, body=b"no\n", methods=("GET", "HEAD")))
        yield first, second


def targets(servers) -> dict[str, str]:
    first, _ = servers
    return {
        "closed port": secret_link(closed_port(), "c.bin"),
        "403": secret_link(first.port, "f.bin"),
        "redirect": secret_link(first.port, "r.bin"),
    }


def log_text(caplog) -> str:
    """Every record of the dlutils loggers, formatted as a handler would (tracebacks too)."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records if r.name.startswith("dlutils"))


def files_under(folder) -> dict[str, bytes]:
    found = {}
    for top, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(top, name), "rb") as fh:
                found[os.path.join(top, name)] = fh.read()
    return found


def check_second_server(second: LocalServer) -> None:
    for record in second.requests:
        seen = f"{record.path}?{record.query} {dict(record.headers)}"
        assert not leaks(seen), f"the redirect target received {leaks(seen)}: {seen}"


@pytest.mark.parametrize("target", ["closed port", "403", "redirect"])
def test_the_pure_function_leaks_nothing(tmp_path, caplog, servers, target):
    caplog.set_level(logging.DEBUG, logger="dlutils")
    link = targets(servers)[target]
    dest = tmp_path / "dest"
    dest.mkdir()
    texts: dict[str, str] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = dlutils.http_download(link, str(dest), headers=HEADERS, retries=1, backoff=0.01)
        except Exception as exc:  # noqa: BLE001 - every failure's text is checked
            assert target != "redirect", exc
            texts["str"], texts["repr"] = str(exc), repr(exc)
            texts["traceback"] = "".join(traceback.format_exception(exc))
        else:
            assert target == "redirect" and open(path, "rb").read() == b"redirected content\n"
    texts["warnings"] = "\n".join(str(w.message) for w in caught)
    texts["log"] = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.name.startswith("dlutils")
    )
    for name, data in files_under(dest).items():
        texts[name] = data.decode("latin-1")
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not found, f"secrets found in: {found}"
    check_second_server(servers[1])


@pytest.mark.parametrize("target", ["closed port", "403", "redirect"])
def test_a_job_leaks_nothing(tmp_path, caplog, servers, target):
    caplog.set_level(logging.DEBUG, logger="dlutils")
    link = targets(servers)[target]
    dest = tmp_path / "dest"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = dlutils.download(link, dest, headers=HEADERS, retries=1, backoff=0.01)
        state = job.wait(60)
    assert state.errors == (0 if target == "redirect" else 1), state.download_errors
    texts = {
        "status": json.dumps(state.to_dict()),
        "repr": repr(job) + repr(state),
        "description": job.description,
        "warnings": "\n".join(str(w.message) for w in caught),
        "log": log_text(caplog),
    }
    for name, data in files_under(dest).items():
        texts[name] = data.decode("latin-1")
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not found, f"secrets found in: {found}"
    check_second_server(servers[1])
    dlutils.remove_job(job.id)


def test_the_cli_leaks_nothing(tmp_path, servers):
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["DLUTILS_HOME"] = str(tmp_path / "state")
    root = os.path.dirname(os.path.dirname(os.path.abspath(dlutils.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "dlutils", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    texts = {}
    for target, link in targets(servers).items():
        dest = tmp_path / f"dest-{target.replace(' ', '-')}"
        run = cli("download", link, str(dest), "--header", f"X-Api-Key: {KEY}", "--wait")
        assert run.returncode == (0 if target == "redirect" else 1), run.stderr
        texts[f"download {target}"] = run.stdout + run.stderr
        for name, data in files_under(dest).items():
            texts[name] = data.decode("latin-1")
    shown = cli("show", "download", "--json", "-v")
    texts["show --json -v"] = shown.stdout + shown.stderr
    listed = cli("show", "download", "--all")
    texts["show --all"] = listed.stdout + listed.stderr
    for name, data in files_under(tmp_path / "state").items():  # job store, worker logs
        texts[name] = data.decode("latin-1")
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not found, f"secrets found in: {found}"
    check_second_server(servers[1])


def test_job_failed_error_leaks_nothing(tmp_path, caplog, servers):
    caplog.set_level(logging.DEBUG, logger="dlutils")
    links = targets(servers)
    objects = {"c.bin": links["closed port"], "f.bin": links["403"]}
    with pytest.raises(dlutils.JobFailedError) as failed:
        dlutils.multi_download(objects, tmp_path / "dest", headers=HEADERS, retries=1, backoff=0.01)
    texts = {
        "str": str(failed.value),
        "repr": repr(failed.value),
        "errors": repr(failed.value.errors),
        "traceback": "".join(traceback.format_exception(failed.value)),
        "log": log_text(caplog),
    }
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert not found, f"secrets found in: {found}"
