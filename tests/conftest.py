"""Fixtures shared by the dlutils tests: a local HTTP server and deterministic data."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator

import pytest

from dlutils.localserver import LocalServer


def list_files(folder) -> list[str]:
    """Every file under ``folder``, relative with ``/`` separators and sorted; the manifest
    dlutils keeps there is left out."""
    return sorted(
        os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
        for root, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".dlutils-manifest")
    )


def make_random_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes, the same for the same ``seed`` on every run."""
    return random.Random(seed).randbytes(n)


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A started :class:`~dlutils.localserver.LocalServer` with no files, stopped afterwards."""
    with LocalServer() as server:
        yield server


@pytest.fixture
def tune() -> Iterator[Callable[..., object]]:
    """``tune(min_segment_size=..., chunk_size=...)`` changes the engine's tunables for this
    test (:func:`dlutils.transfer.tuned`); they come back when the test ends."""
    from dlutils.transfer import tuned

    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(tuned(**changes))


@pytest.fixture(scope="session")
def random_bytes() -> Callable[..., bytes]:
    """The :func:`make_random_bytes` helper: ``random_bytes(n, seed=0)``."""
    return make_random_bytes


def _curl_or_skip() -> str:
    from dlutils.transports import curl_available

    if not curl_available():
        pytest.skip("pycurl cannot be imported here")
    return "curl"


@pytest.fixture(params=["requests", "curl"])
def transport(request) -> str:
    """Each transport in turn (the libcurl one is skipped where pycurl does not import)."""
    return _curl_or_skip() if request.param == "curl" else request.param


def on_transport(monkeypatch, module: str, transport: str) -> None:
    """Make ``module``'s ``http_download``, ``fetch_http`` and ``HttpRemote`` use ``transport``.

    The names the test module imported are replaced by the same functions with
    ``transport=`` given (in ``fetch_http``'s options; ``HttpRemote`` becomes
    :func:`~dlutils.sources.http.open_remote`),
    so its tests run unchanged on both transports, each against the real server.
    """
    import functools
    import sys

    from dlutils.sources import http
    from dlutils.transfer import TransferOptions

    def fetch_http(url, local_filepath=None, options=None):
        options = (options or TransferOptions()).replace(transport=transport)
        return http.fetch_http(url, local_filepath, options)

    namespace = sys.modules[module]
    if hasattr(namespace, "http_download"):
        monkeypatch.setattr(
            namespace, "http_download", functools.partial(http.http_download, transport=transport)
        )
    if hasattr(namespace, "fetch_http"):
        monkeypatch.setattr(namespace, "fetch_http", fetch_http)
    if hasattr(namespace, "HttpRemote"):
        monkeypatch.setattr(
            namespace, "HttpRemote", functools.partial(http.open_remote, transport=transport)
        )
