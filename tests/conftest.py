"""Fixtures shared by the dlutils tests: a local HTTP server and deterministic data."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from dlutils.localserver import LocalServer


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
