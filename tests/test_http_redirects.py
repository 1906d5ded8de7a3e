"""Redirects of http(s) links: followed hop by hop, credentials only to the link's own origin.

Two :class:`~dlutils.localserver.LocalServer` on two ports are two origins (curl and
:func:`dlutils.names.forwardable` count the port), and each records the headers it got.
"""

from __future__ import annotations

import hashlib

import pytest
import requests
from conftest import make_random_bytes, on_transport

from dlutils import http_download
from dlutils.localserver import LocalServer
from dlutils.sources.http import MAX_REDIRECTS

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _each_transport(request, transport, monkeypatch):
    """Every test runs on both transports; one that gives a requests session only on requests."""
    if transport == "curl" and request.node.get_closest_marker("requests_only"):
        pytest.skip("a requests session= or auth object always means the requests transport")
    on_transport(monkeypatch, __name__, transport)


SECRETS = {
    "X-Api-Key": "key-3141",
    "Cookie": "sid=cookie-2718",
    "X-Session-Key": "session-1618",
    "Authorization": "Basic",  # auth=("bob", ...) sends it
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def credential_headers(record) -> set[str]:
    return {name for name in SECRETS if name in record.headers}


@pytest.fixture
def two_hosts():
    with LocalServer() as first, LocalServer() as second:
        yield first, second


def session_with_its_own_header(transport: str = "requests") -> requests.Session | None:
    """A session with a header of its own; libcurl takes no session (``None`` there)."""
    if transport != "requests":
        return None
    session = requests.Session()
    session.headers["X-Session-Key"] = SECRETS["X-Session-Key"]
    return session


def secrets_sent(transport: str) -> set[str]:
    """The credentials a request to the link's own host carries on ``transport``."""
    return set(SECRETS) if transport == "requests" else set(SECRETS) - {"X-Session-Key"}


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_credentials_never_follow_a_redirect_to_another_host(two_hosts, tmp_path, code, transport):
    first, second = two_hosts
    data = make_random_bytes(100_000)
    second.put("store/a.bin", data)
    first.redirect("a.bin", second.url_for("store/a.bin"), status=code)
    path = http_download(
        first.url_for("a.bin"),
        tmp_path / "a.bin",
        session=session_with_its_own_header(transport),
        auth=("bob", "pw-1414"),
        headers={"X-Api-Key": SECRETS["X-Api-Key"], "Cookie": SECRETS["Cookie"]},
        manifest=False,
    )
    assert sha256(open(path, "rb").read()) == sha256(data)
    (asked,) = first.requests_for("a.bin")
    assert credential_headers(asked) == secrets_sent(transport)  # the link's own host: all
    (served,) = second.requests_for("store/a.bin")
    assert credential_headers(served) == set()


def test_every_range_of_a_segmented_download_leaves_the_key_home(two_hosts, tmp_path):
    first, second = two_hosts
    data = make_random_bytes(3 * MiB, seed=3)
    second.put("big.bin", data)
    first.redirect("big.bin", second.url_for("big.bin"))
    path = http_download(
        first.url_for("big.bin"),
        tmp_path / "big.bin",
        headers={"X-Api-Key": SECRETS["X-Api-Key"]},
        segments=4,
        segment_threshold=MiB,
        manifest=False,
    )
    assert sha256(open(path, "rb").read()) == sha256(data)
    served = second.requests_for("big.bin")
    assert len(served) > 1 and any(r.range for r in served)  # several ranges, each redirected
    assert all("X-Api-Key" not in r.headers for r in served)
    assert all(r.headers.get("X-Api-Key") == SECRETS["X-Api-Key"] for r in first.requests)


def test_a_redirect_on_the_same_host_keeps_the_credentials(http_server, tmp_path, transport):
    data = b"same host" * 1000
    http_server.put("real/a.bin", data)
    http_server.redirect("a.bin", "/real/a.bin", status=307)
    path = http_download(
        http_server.url_for("a.bin"),
        tmp_path / "a.bin",
        session=session_with_its_own_header(transport),
        auth=("bob", "pw-1414"),
        headers={"X-Api-Key": SECRETS["X-Api-Key"], "Cookie": SECRETS["Cookie"]},
        manifest=False,
    )
    assert sha256(open(path, "rb").read()) == sha256(data)
    (served,) = http_server.requests_for("real/a.bin")
    assert credential_headers(served) == secrets_sent(transport)
    assert served.headers["X-Api-Key"] == SECRETS["X-Api-Key"]


def test_back_on_the_first_host_after_another_the_credentials_go_again(two_hosts, tmp_path):
    first, second = two_hosts
    first.put("home/a.bin", b"back home")
    first.redirect("a.bin", second.url_for("bounce"))
    second.redirect("bounce", first.url_for("home/a.bin"))
    http_download(first.url_for("a.bin"), tmp_path / "a.bin", headers=SECRETS, manifest=False)
    assert "X-Api-Key" not in second.requests_for("bounce")[0].headers
    assert first.requests_for("home/a.bin")[0].headers["X-Api-Key"] == SECRETS["X-Api-Key"]


def test_a_redirect_loop_ends_with_a_clear_error_and_nothing_written(http_server, tmp_path):
    http_server.redirect("loop.bin", "/loop.bin")
    with pytest.raises(
        requests.TooManyRedirects, match=rf"loop\.bin redirected more than {MAX_REDIRECTS} times"
    ):
        http_download(http_server.url_for("loop.bin"), tmp_path / "loop.bin", manifest=False)
    assert len(http_server.requests_for("loop.bin")) == MAX_REDIRECTS + 1  # not retried
    assert list(tmp_path.iterdir()) == []


@pytest.mark.requests_only
def test_a_sessions_own_auth_stays_home_and_a_session_works_after(two_hosts, tmp_path):
    first, second = two_hosts
    second.put("a.bin", b"elsewhere")
    first.redirect("a.bin", second.url_for("a.bin"))
    first.put("b.bin", b"at home")
    with requests.Session() as session:
        session.auth = ("bob", "pw-1414")
        http_download(first.url_for("a.bin"), tmp_path / "a.bin", session=session, manifest=False)
        http_download(first.url_for("b.bin"), tmp_path / "b.bin", session=session, manifest=False)
    assert "Authorization" in first.requests_for("a.bin")[0].headers
    assert "Authorization" not in second.requests_for("a.bin")[0].headers
    assert "Authorization" in first.requests_for("b.bin")[0].headers  # the session is unchanged


def test_a_backslash_before_the_at_sign_does_not_pass_for_the_links_own_host(
    two_hosts, tmp_path, transport
):
    # http://other\@own/...: urlsplit reads the host after the '@' (the link's own), but
    # requests, urllib3 and browsers read it before the '\' and connect to the other.
    # libcurl reads it after the '@' too: it goes back to the link's own host (which
    # redirects the same way again, until the redirect limit), never to the other.
    first, second = two_hosts
    own = first.url.split("://", 1)[1]
    first.redirect("a.bin", f"{second.url}\\@{own}/a.bin")
    try:
        http_download(
            first.url_for("a.bin"),
            tmp_path / "a.bin",
            auth=("bob", "pw-1414"),
            headers={"X-Api-Key": SECRETS["X-Api-Key"], "Cookie": SECRETS["Cookie"]},
            manifest=False,
        )
    except (requests.HTTPError, requests.TooManyRedirects):
        pass  # the other host has no such object; what matters is what it was sent
    if transport == "requests":
        assert second.requests, "the redirect was not followed to the other host"
    assert [credential_headers(r) for r in second.requests] == [set()] * len(second.requests)
