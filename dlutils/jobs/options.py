"""A job's options, parsed and checked once when the job is created."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError
from ..limits import parse_duration, parse_size

__all__ = ["_Options", "_options"]


@dataclass
class _Options:
    description: str | None = None
    timeout: float | None = None
    connections: int | None = None
    bytes_per_hour: int | None = None
    headers: dict[str, str] | None = None
    cache: bool = True
    retries: int = 5
    executor: Executor | None = None
    progress: bool = False
    session: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


_OPTION_NAMES = {
    "description",
    "timeout",
    "connections",
    "bytes_per_hour",
    "headers",
    "cache",
    "retries",
    "executor",
    "progress",
    "session",
    "verbose",
    "backoff",
    "segments",
    "segment_threshold",
    # options of one source, passed only to links of that scheme
    "aws_profile",
    "endpoint_url",
    "region",
    "token",
}


def _options(opts: Mapping[str, Any]) -> _Options:
    unknown = set(opts) - _OPTION_NAMES
    if unknown:
        raise InvalidInputError(
            f"unknown job option(s) {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(_OPTION_NAMES))}"
        )
    result = _Options()
    result.description = opts.get("description")
    # 0 means "no limit", as in AIStore's requests.
    result.timeout = parse_duration(opts.get("timeout")) or None
    connections = opts.get("connections")
    if connections is not None and (not isinstance(connections, int) or connections < 0):
        raise InvalidInputError(
            f"connections={connections!r} is not valid: use an int >= 0 (0 means no limit)"
        )
    result.connections = connections or None
    bph = opts.get("bytes_per_hour")
    if bph is not None:
        bph = parse_size(bph)
    result.bytes_per_hour = bph or None
    headers = opts.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        raise InvalidInputError(f"headers={headers!r} is not valid: use a mapping name -> value")
    result.headers = dict(headers) if headers else None
    result.cache = bool(opts.get("cache", True))
    result.retries = opts.get("retries", 5)
    executor = opts.get("executor")
    if executor is not None and not isinstance(executor, Executor):
        raise InvalidInputError(
            f"executor={executor!r} is not valid: use a concurrent.futures.Executor"
        )
    result.executor = executor
    result.progress = bool(opts.get("progress", False) or opts.get("verbose", False))
    result.session = opts.get("session")
    passed = ("backoff", "segments", "segment_threshold", "aws_profile", "endpoint_url", "region")
    result.extra = {k: opts[k] for k in (*passed, "token") if k in opts}
    return result
