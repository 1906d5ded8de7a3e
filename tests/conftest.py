"""Fixtures shared by the dlutils tests: a local HTTP server and deterministic data."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def random_bytes() -> Callable[..., bytes]:
    """The :func:`make_random_bytes` helper: ``random_bytes(n, seed=0)``."""
    return make_random_bytes
