"""Every knob of a job in one typed object, checked once where the job is created.

:class:`Options` is what :func:`dlutils.download`, :func:`dlutils.range_download`,
:func:`dlutils.multi_download` and the :class:`dlutils.Job` constructors build from
their keywords (or take as ``options=``) and pass down; sizes and durations are read
with the same parsers as the command line (:func:`dlutils.limits.parse_size`,
:func:`dlutils.limits.parse_duration`).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import sys
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInputError
from .limits import parse_duration, parse_size
from .sources._common import cache_mode
from .transfer.options import TransferOptions
from .transports import choose

__all__ = ["Options", "OPTION_DOCS", "make_options", "from_keywords"]

#: The options' documentation, written once: :class:`Options` and every entry point show it.
OPTION_DOCS = """\
description : str, optional
    What :func:`dlutils.list_jobs` and the status show (default: ``"<source> -> <dest>"``).
connections : int, optional
    Transfers at once (default 8); ``0`` or ``None`` means the default. When given,
    it is a hard cap on the job's connections: files and the extra ranges of big
    files share them.
bytes_per_hour : int or str, optional
    A cap on the job's bandwidth: bytes, or a size such as ``"10GiB"`` or ``"500MB"``;
    ``0`` or ``None`` means no cap.
timeout : float, str or timedelta, optional
    The time one attempt at one object may take: seconds, or a duration such as
    ``"30s"`` or ``"1m30s"``; a slow attempt is stopped and retried. ``0`` or ``None``
    means no limit.
retries : int
    Further attempts at an object after a failure that may pass (an int >= 0, default 5;
    see :class:`dlutils.retry.RetryPolicy`).
backoff : float
    Seconds of the first pause between attempts, doubled at each next one, with jitter
    (default 0.5).
headers : mapping, optional
    Extra HTTP request headers (name -> value), sent to the link's own host only.
cache : bool or "verified"
    Skip an object already here and current (default ``True``: the server is asked);
    ``False`` fetches all; ``"verified"`` keeps a file known good (its checksum given, or
    verified by dlutils when it placed it, and unchanged since) with no request at all.
progress : bool
    Show a progress bar of the job's bytes (and one per big file). ``verbose`` is the
    same, under pyvo's name.
executor : concurrent.futures.Executor or distributed.Client, optional
    Run the transfers there instead of a thread pool. A Dask ``Client`` (or its
    ``get_executor()``) gets batches of objects, with live progress, abort, and
    ``connections`` and ``bytes_per_hour`` held across the cluster (see
    :doc:`/scaling`). Any other executor that is not a ``ThreadPoolExecutor`` runs one
    object per task in other processes: there ``bytes_per_hour`` is refused, progress
    counts completed files and ``abort()`` cancels only what has not started (see
    :doc:`/jobs`, "Executors and destinations").
session : requests.Session, optional
    The session http(s) links are fetched with (default: a pooled one per thread).
    It cannot travel to the workers of a cluster: give ``session_factory`` there.
session_factory : callable, optional
    A function of no arguments returning a ``requests.Session``, called where the
    transfers run (once per job on threads, once per batch on a Dask worker), so that
    each process makes its own; it must pickle for a cluster (a module-level function).
segments : int, optional
    Connections one big object may use (ranges fetched in parallel); default 32.
    It starts with 8 and adds more while the throughput rises.
segment_threshold : int or str, optional
    Objects at least this big (bytes, or ``"64MiB"``) are fetched in segments.
transport : str
    What moves the bytes of http(s) links: ``"auto"`` (default: libcurl unless a
    ``session`` is given), ``"curl"`` or ``"requests"``; other sources ignore it.
aws_profile, endpoint_url, region : str, optional
    For ``s3://`` links only: the AWS profile, the S3 endpoint, the region.
token : str, optional
    For ``gs://`` and ``hf://`` links only: the access token (never shown, never sent
    elsewhere).
storage_options : mapping, optional
    For an object-store ``dest`` only: what its fsspec filesystem is made with, such as
    ``{"endpoint_url": ..., "key": ..., "secret": ...}`` for ``s3://`` (default: s3fs
    reads the environment). It may hold credentials: never shown, logged or stored.
"""


@dataclass(frozen=True)
class Options:
    """The options of a job, checked and normalised when it is made.

    Each value is checked once, here, and a wrong one raises
    :class:`~dlutils.InvalidInputError` naming it and showing a valid one. Durations
    become seconds and sizes bytes; ``0`` means "no limit" where it does in AIStore.
    Use :meth:`replace` for a changed copy.

    Parameters
    ----------
    {options}
    Examples
    --------
    >>> from dlutils import Options
    >>> Options(timeout="1m30s", bytes_per_hour="1GiB", retries=2).timeout
    90.0
    >>> Options(bytes_per_hour="1GiB").bytes_per_hour
    1073741824
    >>> Options(retries=-1)
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: retries=-1 is not valid: use an int >= 0, such as retries=5
    """

    description: str | None = None
    connections: int | None = None
    bytes_per_hour: int | str | None = None
    timeout: float | str | datetime.timedelta | None = None
    retries: int = 5
    backoff: float = 0.5
    headers: Mapping[str, str] | None = None
    cache: bool | str = True
    progress: bool = False
    executor: Executor | Any = None
    session: Any = None
    session_factory: Any = None
    segments: int | None = None
    segment_threshold: int | str | None = None
    transport: str = "auto"
    aws_profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    token: str | None = None
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` (checked as the constructor checks them)."""
        return make_options(changes, base=self)

    def transfer(self, *, make_session: bool = True) -> TransferOptions:
        """What every source's ``fetch_*`` takes from these options, as one object.

        Options of one scheme (``aws_profile``, ``token``...) are included when given;
        each source reads only its own. A ``session_factory`` is called here for the
        session, unless ``make_session`` is false (a cluster calls it on each worker).
        """
        session = self.session
        if session is None and self.session_factory is not None and make_session:
            session = self.session_factory()
        given = {
            "cache": self.cache,
            "session": session,
            "headers": self.headers,
            "retries": self.retries,
            "backoff": self.backoff,
            "transport": self.transport,
        }
        for name in ("segments", "segment_threshold", "storage_options", *_SCHEME_ONLY):
            value = getattr(self, name)
            if value is not None:
                given[name] = value
        return TransferOptions(**given)


Options.__doc__ = (Options.__doc__ or "").replace(
    "{options}", OPTION_DOCS.replace("\n", "\n    ").rstrip() + "\n"
)

#: Options that only some schemes understand (see ``dlutils.sources.SOURCE_OPTIONS``).
_SCHEME_ONLY = ("aws_profile", "endpoint_url", "region", "token")
_FIELDS = tuple(f.name for f in dataclasses.fields(Options))
#: Names kept for the callers who used them: ``verbose`` is pyvo's name for ``progress``.
_ALIASES = {"verbose": "progress"}


def make_options(given: Mapping[str, Any], base: Options | None = None) -> Options:
    """:class:`Options` from keywords (``verbose`` read as ``progress``), over ``base``.

    An unknown name is refused with the known names, the closest one first.
    """
    values = dict(given)
    for old, new in _ALIASES.items():
        if old in values:
            alias = values.pop(old)
            values[new] = bool(values.get(new, False) or alias)
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, _FIELDS, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InvalidInputError(
            f"unknown job option(s) {', '.join(hints)}; known: {', '.join(_FIELDS)}"
        )
    if base is None:
        return Options(**values)
    return dataclasses.replace(base, **values)


def _checked(options: Options) -> dict[str, Any]:
    """The normalised value of every field, or an error naming the first bad one."""
    out: dict[str, Any] = {}
    for name in ("description", "transport", *_SCHEME_ONLY):
        value = getattr(options, name)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{name}={value!r} is not valid: use a string")
    if options.session_factory is not None:
        if not callable(options.session_factory):
            raise InvalidInputError(
                f"session_factory={options.session_factory!r} is not valid: use a function "
                "of no arguments returning a requests.Session, such as requests.Session"
            )
        if options.session is not None:
            raise InvalidInputError(
                "session= and session_factory= were both given: give one (session_factory "
                "for a cluster, whose workers each make their own)"
            )
    # "auto" is decided where each object is fetched (another process may lack pycurl)
    choose(options.transport, session=options.session or options.session_factory)
    out["connections"] = _count(options.connections, "connections", 0, "8") or None
    out["segments"] = _count(options.segments, "segments", 1, "8")
    if not _is_int(options.retries) or options.retries < 0:
        raise InvalidInputError(
            f"retries={options.retries!r} is not valid: use an int >= 0, such as retries=5"
        )
    backoff = options.backoff
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not backoff >= 0:
        raise InvalidInputError(
            f"backoff={backoff!r} is not valid: use seconds >= 0, such as backoff=0.5"
        )
    out["backoff"] = float(backoff)
    out["timeout"] = _parsed(parse_duration, options.timeout, "timeout", "'30s'") or None
    out["bytes_per_hour"] = (
        _parsed(parse_size, options.bytes_per_hour, "bytes_per_hour", "'10GiB'") or None
    )
    threshold = _parsed(parse_size, options.segment_threshold, "segment_threshold", "'64MiB'")
    if threshold is not None:
        out["segment_threshold"] = max(1, threshold)
    headers = options.headers
    if headers is not None:
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidInputError(
                f"headers={_shown_headers(headers)} is not valid: use a mapping of strings "
                "name -> value, such as headers={'Authorization': 'Bearer ...'}"
            )
        out["headers"] = dict(headers) or None
    out["cache"] = cache_mode(options.cache)
    given = options.storage_options
    if given is not None:
        if not isinstance(given, Mapping) or not all(isinstance(k, str) for k in given):
            kind = type(given).__name__  # never its values: they may be credentials
            raise InvalidInputError(
                f"storage_options (a {kind}) is not valid: use a mapping of the fsspec "
                "filesystem's keywords, such as storage_options={'endpoint_url': "
                "'http://127.0.0.1:9000', 'key': ..., 'secret': ...}"
            )
        out["storage_options"] = dict(given) or None
    value = options.progress
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise InvalidInputError(f"progress={value!r} is not valid: use True or False")
    out["progress"] = bool(value)
    cluster = dask_client(options.executor) is not None
    if options.executor is not None and not cluster and not isinstance(options.executor, Executor):
        raise InvalidInputError(
            f"executor={options.executor!r} is not valid: use a concurrent.futures.Executor, "
            "such as ThreadPoolExecutor(8), or a Dask Client"
        )
    if out["bytes_per_hour"] and not runs_here(options.executor) and not cluster:
        # the limiter is a lock in this process: another process's workers never see it
        raise InvalidInputError(
            f"bytes_per_hour={options.bytes_per_hour!r} cannot be honoured on executor="
            f"{type(options.executor).__name__}: its workers do not share this process's "
            "limiter; use the default thread pool (or a ThreadPoolExecutor) or drop the limit"
        )
    return out


def runs_here(executor: Executor | None) -> bool:
    """Whether a job's tasks run in this process's threads (the default, or a thread pool).

    Only there do the job's byte limit, live progress and abort reach each transfer.
    """
    return executor is None or isinstance(executor, ThreadPoolExecutor)


def dask_client(executor: Any) -> Any:
    """The ``distributed.Client`` behind ``executor`` (a Client or its ``get_executor()``).

    ``None`` for anything else; ``distributed`` is never imported here (a client given
    means it already is).
    """
    module = sys.modules.get("distributed")
    if module is None or executor is None:
        return None
    if isinstance(executor, module.Client):
        return executor
    cf = sys.modules.get("distributed.cfexecutor")
    if cf is not None and isinstance(executor, cf.ClientExecutor):
        return executor._client
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any, name: str, least: int, example: str) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < least:
        zero = " (0 means the default)" if least == 0 else ""
        raise InvalidInputError(
            f"{name}={value!r} is not valid: use an int >= {least}{zero}, such as {name}={example}"
        )
    return int(value)


def _parsed(parse: Any, value: Any, name: str, example: str) -> Any:
    if value is None:
        return None
    try:
        return parse(value)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{name}: {exc} (for instance {name}={example})") from None


def _shown_headers(headers: Any) -> str:
    """The headers as an error shows them: names only, never a value (it may be a token)."""
    if isinstance(headers, Mapping):
        return "{" + ", ".join(f"{k!r}: ..." for k in headers) + "}"
    return type(headers).__name__


_DEFAULTS = Options()


def from_keywords(values: Mapping[str, Any], options: Options | None = None) -> Options:
    """:class:`Options` from an entry point's keywords (its ``locals()``) over ``options``.

    Only the names of options are read; over a given ``options``, a keyword left at its
    default changes nothing, so ``options=`` and keywords can be mixed.
    """
    if options is not None and not isinstance(options, Options):
        raise InvalidInputError(
            f"options={options!r} is not valid: use dlutils.Options(...), such as "
            "options=Options(connections=4, timeout='30s')"
        )
    given = {name: values[name] for name in _FIELDS if name in values}
    if values.get("verbose"):
        given["progress"] = True
    if options is None:
        return Options(**given)
    changed = {
        k: v
        for k, v in given.items()
        if v is not getattr(_DEFAULTS, k)
        and not (type(v) is type(getattr(_DEFAULTS, k)) and v == getattr(_DEFAULTS, k))
    }
    return dataclasses.replace(options, **changed) if changed else options
