"""The transport option: libcurl for jobs, requests for http_download alone and sessions.

The engine's own suites (test_integrity_engine, test_http, test_http_redirects) run on
both transports; here is what is particular to choosing one, and to libcurl.
"""

from __future__ import annotations

import hashlib

import pytest
import requests
from conftest import make_random_bytes

import dlutils
from dlutils import InvalidInputError, http_download, range_download
from dlutils.localserver import stall, status
from dlutils.sources.http import fetch_http
from dlutils.transfer import TransferOptions
from dlutils.transports import choose

pytest.importorskip("pycurl")

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def agents(server) -> set[str]:
    """The client libraries that sent the server's requests (by User-Agent)."""
    return {
        "libcurl" if "libcurl" in r.headers.get("User-Agent", "") else "requests"
        for r in server.requests
    }


@pytest.mark.parametrize(
    "given, match",
    [
        ({"transport": "wget"}, r"transport='wget' is not valid: use one of 'auto', 'curl'"),
        ({"transport": "curl", "session": requests.Session()}, r"cannot use session="),
        (
            {"transport": "curl", "auth": requests.auth.HTTPDigestAuth("u", "p")},
            r"cannot use auth=HTTPDigestAuth.*auth=\('user', 'password'\)",
        ),
    ],
)
def test_a_transport_that_cannot_serve_the_call_is_a_clear_error(given, match):
    transport = given.pop("transport")
    with pytest.raises(InvalidInputError, match=match):
        choose(transport, **given)


def test_auto_takes_libcurl_unless_a_session_or_requests_auth_is_given():
    assert choose("auto") == "curl"
    assert choose("auto", auth=("user", "password")) == "curl"
    assert choose("auto", session=requests.Session()) == "requests"
    assert choose("auto", auth=requests.auth.HTTPBasicAuth("u", "p")) == "requests"


def test_http_download_alone_stays_on_requests(http_server, tmp_path):
    # pyvo's users mock requests (responses, requests_mock): http_download keeps to it.
    http_server.put("a.bin", b"pyvo")
    http_download(http_server.url_for("a.bin"), tmp_path)
    assert agents(http_server) == {"requests"}


def test_libcurl_reuses_one_connection_across_objects(http_server, tmp_path):
    files = {f"{i}.bin": make_random_bytes(70_000, seed=i) for i in range(5)}
    for name, data in files.items():
        http_server.put(name, data)
    for name, data in files.items():
        fetched = fetch_http(http_server.url_for(name), tmp_path, TransferOptions(transport="curl"))
        assert sha(open(fetched.path, "rb").read()) == sha(data)
    assert agents(http_server) == {"libcurl"}
    assert len({r.connection for r in http_server.requests}) == 1


def test_an_error_status_over_libcurl_is_a_requests_http_error_with_its_response(
    http_server, tmp_path
):
    http_server.put("a.bin", b"x")
    for _ in range(2):
        http_server.add_fault("a.bin", status(503, retry_after="7", body=b"come back later"))
    pauses = []
    with pytest.raises(requests.HTTPError, match=r"503 Server Error.*a\.bin") as caught:
        http_download(
            http_server.url_for("a.bin") + "?token=s3cr3t",
            tmp_path / "a.bin",
            retries=1,
            sleep=pauses.append,
            transport="curl",
        )
    response = caught.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (503, "7")
    assert response.text == "come back later"
    assert pauses == [7.0]  # Retry-After honoured, as over requests
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in response.url


def test_a_refused_connection_over_libcurl_is_a_requests_connection_error(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(requests.ConnectionError, match=r"127\.0\.0\.1.*a\.bin") as caught:
        http_download(
            f"http://127.0.0.1:{port}/a.bin?sig=abc123",
            tmp_path / "a.bin",
            retries=0,
            transport="curl",
        )
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert "Connection refused" in str(caught.value)  # the words the requests transport uses
    assert "abc123" not in str(caught.value)


def test_a_range_job_runs_on_libcurl_by_default(http_server, tmp_path):
    files = {f"s/{i:03d}.bin": make_random_bytes(64 * 1024, seed=i) for i in range(40)}
    for name, data in files.items():
        http_server.put(name, data)
    paths = range_download(http_server.url + "/s/{000..039}.bin", tmp_path)
    assert len(paths) == 40
    for path in paths:
        name = "s/" + path.rsplit("/", 1)[1]
        assert sha(open(path, "rb").read()) == sha(files[name])
    assert agents(http_server) == {"libcurl"}


def test_a_job_with_a_session_or_transport_requests_uses_requests(http_server, tmp_path):
    http_server.put("s/0.bin", b"zero")
    http_server.put("s/1.bin", b"one")
    template = http_server.url + "/s/{0..1}.bin"
    range_download(template, tmp_path / "a", session=requests.Session())
    range_download(template, tmp_path / "b", transport="requests")
    assert agents(http_server) == {"requests"}
    with pytest.raises(InvalidInputError, match="transport='curl' cannot use session="):
        dlutils.Job.range(template, tmp_path / "c", transport="curl", session=requests.Session())


@pytest.mark.parametrize("reused", [False, True], ids=["new-connection", "reused-connection"])
def test_headers_that_never_come_end_in_a_read_timeout_on_both_transports(
    http_server, tmp_path, transport, reused
):
    http_server.put("a.bin", b"late")
    if reused:  # libcurl reports no connect time on a reused connection
        fetch_http(
            http_server.url_for("a.bin"), tmp_path / "warm", TransferOptions(transport=transport)
        )
    http_server.add_fault("a.bin", stall(60, before_headers=True))
    with pytest.raises(requests.ReadTimeout, match=r"127\.0\.0\.1"):
        fetch_http(
            http_server.url_for("a.bin"),
            tmp_path / "a.bin",
            TransferOptions(timeout=(30, 0.3), retries=0, manifest=False, transport=transport),
        )
    assert not (tmp_path / "a.bin").exists()


def test_a_link_with_non_ascii_and_spaces_is_sent_encoded_on_both_transports(
    http_server, tmp_path, transport
):
    data = make_random_bytes(5000, seed=7)
    http_server.put("données/été 2024.csv", data)
    fetched = fetch_http(
        http_server.url + "/données/été 2024.csv", tmp_path, TransferOptions(transport=transport)
    )
    assert fetched.path.endswith("été 2024.csv")
    assert sha(open(fetched.path, "rb").read()) == sha(data)


def test_without_pycurl_auto_falls_back_to_requests_and_curl_says_why(http_server, tmp_path):
    # A machine where pycurl cannot be imported (no wheel for it): a job still runs.
    import os
    import subprocess
    import sys
    import textwrap

    http_server.put("s/0.bin", b"zero")
    http_server.put("s/1.bin", b"one")
    child = textwrap.dedent(
        """
        import sys
        sys.modules["pycurl"] = None  # import pycurl now fails, as where it is missing
        import dlutils
        from dlutils.transports import choose
        paths = dlutils.range_download(sys.argv[1], sys.argv[2])
        print(sorted(open(p, "rb").read().decode() for p in paths))
        try:
            choose("curl")
        except dlutils.InvalidInputError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", child, http_server.url + "/s/{0..1}.bin", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['one', 'zero']",
        "transport='curl' needs pycurl, which cannot be imported here: pip install pycurl, "
        "or use transport='requests'",
    ]
    assert agents(http_server) == {"requests"}


def test_a_libcurl_body_closed_from_another_thread_ends_its_blocked_read(http_server):
    import threading

    from dlutils import IncompleteDownloadError
    from dlutils.transports.curl import CurlRemote

    http_server.put("a.bin", make_random_bytes(3 * MiB))
    http_server.add_fault("a.bin", stall(60, after_bytes=MiB))  # only the close can end it
    body = CurlRemote(http_server.url_for("a.bin")).open()
    received = 0
    while received < MiB:
        received += len(body.read(MiB))
    closer = threading.Thread(target=body.close)
    closer.start()
    with pytest.raises(IncompleteDownloadError, match=r"a\.bin: the transfer was interrupted"):
        body.read(MiB)  # the server is silent: only the close ends this read
    closer.join()
    assert received == MiB


def test_a_header_with_a_line_break_is_refused_on_both_transports(http_server, tmp_path, transport):
    # libcurl would send the line as it is: a second, injected header.
    http_server.put("a.bin", b"x")
    with pytest.raises(requests.exceptions.InvalidHeader):
        fetch_http(
            http_server.url_for("a.bin"),
            tmp_path,
            TransferOptions(
                headers={"X-Tag": "a\r\nX-Injected: yes"}, retries=0, transport=transport
            ),
        )
    assert all("X-Injected" not in r.headers for r in http_server.requests)


def test_auth_and_headers_reach_the_server_as_requests_sends_them(http_server, tmp_path, transport):
    # A ':' inside the user name and latin-1 letters, on the wire as requests puts them.
    http_server.put("a.bin", b"x")
    fetch_http(
        http_server.url_for("a.bin"),
        tmp_path,
        TransferOptions(
            auth=("us:er", "pässword"),
            headers={"X-Team": "café"},
            manifest=False,
            transport=transport,
        ),
    )
    (request,) = http_server.requests
    assert request.headers["Authorization"] == "Basic dXM6ZXI6cORzc3dvcmQ="
    assert request.headers["X-Team"] == "café"
