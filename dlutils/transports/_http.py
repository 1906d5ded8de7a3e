"""What every HTTP transport agrees on: limits, which headers may cross origins, what a
response's headers say, how a request asks for a range, and which failures are worth a retry.

Both :class:`~dlutils.sources.http.HttpRemote` (requests) and
:class:`~dlutils.transports.curl.CurlRemote` (libcurl) read these, so the engine gets the
same facts whichever transport moved the bytes.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Mapping

import requests
import urllib3

from ..retry import FATAL_STATUS, RETRYABLE_STATUS, parse_retry_after

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "PORTABLE_HEADERS",
    "REDIRECT_STATUSES",
    "parse_range",
    "validator",
    "asked",
    "get_headers",
    "classify",
]

#: (connect, read) seconds used when ``timeout=None``: a silent server is never waited for forever.
DEFAULT_TIMEOUT = (30.0, 120.0)
#: Redirects followed for one request before giving up (as requests does).
MAX_REDIRECTS = 30
#: Headers sent to a redirect's target on another origin: what the transfer needs, nothing
#: that could identify or authorise the user.
PORTABLE_HEADERS = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "if-match", "accept",
     "accept-encoding", "user-agent", "connection"}
)  # fmt: skip
#: Statuses that send the request on to a ``Location``.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def parse_range(headers: Mapping[str, str], status: int) -> tuple[int, int | None, int | None]:
    """(start, end, total) of a response from its Content-Range / Content-Length.

    Examples
    --------
    >>> from dlutils.transports._http import parse_range
    >>> parse_range({"Content-Range": "bytes 10-19/100"}, 206)
    (10, 19, 100)
    >>> parse_range({"Content-Length": "42"}, 200)
    (0, None, 42)
    """
    content_range = headers.get("Content-Range")
    if content_range:
        match = _CONTENT_RANGE.match(content_range.strip())
        if match:
            start = int(match.group(1)) if match.group(1) else 0
            end = int(match.group(2)) if match.group(2) else None
            total = int(match.group(3)) if match.group(3) != "*" else None
            return start, end, total
    length = headers.get("Content-Length")
    total = int(length) if status == 200 and length and length.isdigit() else None
    return 0, None, total


def asked(request_headers: Mapping[str, str], encoding: str | None) -> bool:
    """Whether the request's Accept-Encoding asked for every coding in ``encoding``."""
    accept = next((v for k, v in request_headers.items() if k.lower() == "accept-encoding"), "")
    accepted = set()
    for item in accept.lower().split(","):
        coding, _, params = item.partition(";")
        if params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            accepted.add(coding.strip())
    codings = [c.strip() for c in (encoding or "").split(",") if c.strip() not in ("", "identity")]
    return bool(codings) and all(c in accepted or "*" in accepted for c in codings)


def validator(headers: Mapping[str, str]) -> str | None:
    """A strong ETag, else the Last-Modified date: what pins later ranges to this version."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified") or None


def get_headers(
    base: Mapping[str, str],
    start: int = 0,
    end: int | None = None,
    if_range: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers of one GET: ``base``, the range asked (pinned by ``If-Range``), ``extra``.

    Examples
    --------
    >>> from dlutils.transports._http import get_headers
    >>> get_headers({"Accept-Encoding": "identity"}, 100, None, '"v1"')
    {'Accept-Encoding': 'identity', 'Range': 'bytes=100-', 'If-Range': '"v1"'}
    """
    headers = dict(base)
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        if if_range:
            headers["If-Range"] = if_range
    if extra:
        headers.update(extra)
    return headers


def classify(exc: BaseException) -> tuple[bool, float | None]:
    """Whether ``exc`` is worth another attempt, and the pause the server asked for.

    Both transports raise requests' errors, so one rule serves them. Refused connections
    and unknown hosts are retryable, but the engine gives them at most one quick retry
    (:func:`dlutils.retry.unreachable`).
    """
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
        if status in FATAL_STATUS:
            return False, None
        if status in RETRYABLE_STATUS or status >= 500:
            return True, retry_after if status in (429, 503) else None
        return False, None
    if isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True, None
    return False, None
