"""Transports: what moves an http(s) object's bytes, libcurl (``pycurl``) or ``requests``.

Both open a link for the engine through the same :class:`dlutils.transfer.Remote`
protocol and pass the same contract and fault suites. :func:`choose` turns the
``transport=`` option (``"auto"``, ``"curl"``, ``"requests"``) into one of the two.
``pycurl`` is imported on first use: ``import dlutils`` does not load libcurl.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from ..errors import InvalidInputError

__all__ = ["TRANSPORTS", "choose", "curl_available"]

#: The values of the ``transport=`` option.
TRANSPORTS = ("auto", "curl", "requests")


@functools.lru_cache(maxsize=1)
def curl_available() -> bool:
    """Whether ``pycurl`` can be imported here (the libcurl transport can be used)."""
    if importlib.util.find_spec("pycurl") is None:
        return False
    try:
        import pycurl  # noqa: F401
    except ImportError:  # a wheel whose libcurl cannot be loaded
        return False
    return True


def _plain_auth(auth: Any) -> bool:
    """Whether ``auth`` is a ``(user, password)`` pair of strings, which libcurl can send."""
    return isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(a, str) for a in auth)


def choose(transport: str, *, session: Any = None, auth: Any = None) -> str:
    """``"curl"`` or ``"requests"``: the transport that ``transport=`` asks for.

    ``"auto"`` is libcurl when ``pycurl`` imports and neither a ``session`` nor a
    requests auth object is given (a ``(user, password)`` pair works on both), else
    requests. ``"curl"`` with a session or an auth object is an error, and so is
    ``"curl"`` without ``pycurl``.

    Examples
    --------
    >>> from dlutils.transports import choose
    >>> choose("requests")
    'requests'
    >>> import requests
    >>> choose("auto", session=requests.Session())
    'requests'
    """
    if transport not in TRANSPORTS:
        raise InvalidInputError(
            f"transport={transport!r} is not valid: use one of "
            f"{', '.join(repr(t) for t in TRANSPORTS)}"
        )
    if transport == "requests":
        return "requests"
    requests_only = session is not None or (auth is not None and not _plain_auth(auth))
    if transport == "auto":
        return "curl" if not requests_only and curl_available() else "requests"
    if requests_only:
        given = "session=" if session is not None else f"auth={type(auth).__name__}"
        raise InvalidInputError(
            f"transport='curl' cannot use {given}: a requests session or auth object only "
            "works with transport='requests' (libcurl takes auth=('user', 'password'))"
        )
    if not curl_available():
        raise InvalidInputError(
            "transport='curl' needs pycurl, which cannot be imported here: "
            "pip install pycurl, or use transport='requests'"
        )
    return "curl"
