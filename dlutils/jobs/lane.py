"""Small objects of a job over one libcurl multi handle, driven by one thread.

A job of many small http(s) objects spends its time in Python, not on the network: a
thread per transfer costs a few hundred microseconds of interpreter per object, and
threads fighting for the GIL cost more. :class:`Lane` runs up to ``slots`` transfers
at once in a single ``pycurl.CurlMulti`` (the GIL released while libcurl waits), with
libcurl's bytes written straight to each object's ``.part``.

It takes only the plain case, and hands everything else to the engine
(:func:`dlutils.sources.fetch` on the job's threads), which then fetches the object
from scratch with all its rules:

- nothing at the object's path yet (freshness, conditional requests and resumes are
  the engine's), and an empty or absent ``.part``;
- a ``200`` with a ``Content-Length`` below the segment threshold and of the size the
  listing expects, no ``Content-Encoding`` but ``identity``, no ``Content-Range``;
- no redirect (they are followed by the engine, which drops secrets on the way), no
  error status, no transport error, no timeout.

What it places goes through the engine's own checks: the ``.part`` is opened and locked
by :func:`dlutils.transfer.parts._lock_part` (never through a link), and placed by the
engine's ``_finish`` (size against the announced one, the expected size, a given
checksum, ``fsync`` if asked, the ``.part`` still the file written, ``os.replace``);
its record is written as :func:`dlutils.sources.http.fetch_http` writes it. An abort
stops every transfer within :data:`POLL` seconds.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pycurl
import requests

from ..errors import DownloadAborted, DownloadTimeoutError, IncompleteDownloadError
from ..freshness import Manifest, attrs_from_headers
from ..names import redact_text
from ..retry import UNREACHABLE_DELAY, RetryPolicy, unreachable
from ..sources import scheme_of
from ..sources._common import record, with_verified
from ..transfer import (
    SEGMENT_THRESHOLD,
    Fetched,
    TransferOptions,
    _Transfer,
    part_path,
)
from ..transfer.parts import _lock_part, _remove_if_empty
from ..transfer.protocols import _Settings
from ..transfer.retries import _quietly
from ..transfer.tunables import current as current_tunables
from ..transports._http import validator as _validator
from ..transports.curl import (
    CurlRemote,
    _connection_error,
    _Exchange,
    _response,
    _wire_url,
    configure,
)

if TYPE_CHECKING:
    from ..checksums import Checksum
    from .bars import _TaskProgress
    from .runner import Job
    from .tasks import _Task

__all__ = ["Lane", "POLL"]

log = logging.getLogger("dlutils")

#: Longest wait of the driving thread: how soon an abort stops every transfer.
POLL = 0.1
_END = object()
#: Bodies up to this size are kept in memory until complete and written at once: at most
#: ``slots`` of them at a time. Larger ones are written as they come.
HELD_MAX = 256 * 1024


class _Small:
    """One object in the lane: its task, ``.part`` descriptor, answer and bytes so far."""

    def __init__(self, task: _Task, settings: _Settings, fd: int, progress: _TaskProgress):
        self.task = task
        self.s = settings
        self.fd = fd
        self.transfer = _Transfer(settings, fd)  # the engine's bookkeeping and final checks
        self.progress = progress
        self.exchange = _Exchange(None, "", settings.remote.display, (0.0, 0.0))  # type: ignore[arg-type]
        self.length: int | None = None
        self.refused: str | None = None  # why the answer is the engine's to handle
        self.failed = False  # the answer was an error status
        self.headers: Any = None  # the answer's headers, once they qualified it
        self.recorded = False  # a resume record was written for its .part
        self.held: bytearray | None = None  # a small body, kept until it is complete
        self.received = 0
        self.started = time.monotonic()

    def on_header(self, line: bytes) -> int | None:
        exchange = self.exchange
        exchange.on_header(line)
        if not exchange.headers_done or self.length is not None:
            return None
        self.refused = self._refusal()
        if self.refused is not None:
            return 0  # stop this transfer: the engine fetches the object
        self.progress.set_size(self.length)
        if self.length <= HELD_MAX:  # one write instead of one per piece libcurl hands over
            self.held = bytearray()
        validator = _validator(self.headers)
        if validator and self.length > self.s.tunables.chunk_size:  # worth a resume record
            self.transfer._record({"validator": validator, "total": self.length})
            self.recorded = True
        return None

    def _refusal(self) -> str | None:
        exchange = self.exchange
        if exchange.status >= 400:
            self.failed = True  # an attempt that failed, not an answer for the engine
            return f"status {exchange.status}"
        if exchange.status != 200:
            return f"status {exchange.status}"
        headers = self.headers = exchange.headers()
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            return f"Content-Encoding {encoding}"
        if "Content-Range" in headers:
            return "a Content-Range"
        length = headers.get("Content-Length", "").strip()
        if not length.isdigit():
            return "no Content-Length"
        self.length = int(length)
        if self.length >= self.s.segment_threshold:
            return "a big object"
        if self.task.size is not None and self.length != self.task.size:
            return "another size than listed"
        return None

    def on_write(self, data: bytes) -> int | None:
        if self.length is None or self.received + len(data) > self.length:
            self.refused = self.refused or "more bytes than announced"
            return 0
        if self.held is not None:  # a small body: written once, whole
            self.held += data
        else:
            _write_all(self.fd, data)
        self.received += len(data)
        self.progress.update(len(data))
        return None

    def write_held(self) -> None:
        """Write what was held back to the ``.part`` (before the engine checks it)."""
        if self.held:
            _write_all(self.fd, self.held)
        self.held = None


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Reading:
    """What :func:`~dlutils.transports.curl._connection_error` reads of a failed handle."""

    def __init__(self, easy: Any):
        self.easy = easy


class Lane:
    """Fetches small http(s) objects of ``job`` in one thread; see the module's text.

    ``put`` a task (the caller holds its place in the job's window and counts it
    scheduled); it ends in ``job._task_done`` (placed or failed here) or in
    ``handoff(task, retries, pause)`` (the engine's, from scratch: ``retries`` left, or
    ``None`` for all of them, after ``pause`` seconds). ``finish()`` once no more tasks come.
    """

    def __init__(
        self,
        job: Job,
        *,
        slots: int,
        common: TransferOptions,
        window: threading.BoundedSemaphore,
        handoff: Callable[[_Task, int | None, float], None],
        checksum_of: Callable[[_Task], Checksum | None],
    ):
        self.job = job
        self.slots = slots
        self.window = window
        self.handoff = handoff
        self.checksum_of = checksum_of
        self.headers = dict(common.headers or {})
        self.policy = RetryPolicy(retries=common.retries, backoff=common.backoff)
        self.manifest: Manifest | None = (
            common.manifest if isinstance(common.manifest, Manifest) else None
        )
        self.verified = common.cache == "verified"
        self.fsync = bool(common.fsync)
        self.threshold = common.segment_threshold or SEGMENT_THRESHOLD
        self.timeout = common.timeout
        self.tunables = current_tunables()  # as a transfer reads them when it starts
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"{job.id}-lane", daemon=True)
        self._thread.start()

    @staticmethod
    def takes(task: _Task) -> bool:
        """Whether ``task`` may go through a lane: a plain http(s) link, nothing listed."""
        return (
            not task.error
            and task.remote_attrs is None
            and not task.big
            and scheme_of(task.link) in ("http", "https")
        )

    def put(self, task: _Task) -> None:
        self._queue.put(task)

    def finish(self) -> None:
        """No more tasks: the thread ends once those given are done."""
        self._queue.put(_END)

    def join(self) -> None:
        self._thread.join()

    # -- the driving thread -----------------------------------------------------------

    def _run(self) -> None:
        multi = pycurl.CurlMulti()
        idle: list[Any] = []
        active: dict[Any, _Small] = {}
        waiting: deque[_Task] = deque()
        ending = False
        budget = getattr(self.job, "_budget", None)
        abort = self.job._abort
        try:
            while True:
                # take what came, without waiting while transfers run
                while not ending:
                    try:
                        item = self._queue.get(block=not active and not waiting, timeout=POLL)
                    except queue.Empty:
                        break
                    if item is _END:
                        ending = True
                    else:
                        waiting.append(item)
                if abort.is_set():
                    for easy in list(active):
                        multi.remove_handle(easy)
                        self._stopped(active.pop(easy))
                        if budget is not None:
                            budget.release()
                    while waiting:
                        self._fail(waiting.popleft(), DownloadAborted("job aborted"))
                    if ending:
                        return
                    continue
                while waiting and len(active) < self.slots:
                    if budget is not None and not budget.try_acquire():
                        break
                    task = waiting.popleft()
                    small = self._start(task)
                    if small is None:
                        if budget is not None:
                            budget.release()
                        continue
                    easy = idle.pop() if idle else pycurl.Curl()
                    try:
                        self._configure(easy, small)
                    except Exception as exc:  # noqa: BLE001 - a header libcurl cannot send
                        if budget is not None:
                            budget.release()
                        easy.reset()
                        idle.append(easy)
                        self._abandon(small)
                        self._fail(task, exc)
                        continue
                    multi.add_handle(easy)
                    active[easy] = small
                if not active:
                    if ending and not waiting:
                        return
                    if waiting:  # every connection is in use by the engine's threads
                        abort.wait(0.01)
                    continue
                while True:
                    code, _ = multi.perform()
                    if code != pycurl.E_CALL_MULTI_PERFORM:
                        break
                while True:
                    left, done, failed = multi.info_read()
                    for easy in done:
                        self._ended(multi, easy, active.pop(easy), None, idle, budget)
                    for easy, errno, message in failed:
                        self._ended(multi, easy, active.pop(easy), (errno, message), idle, budget)
                    if not left:
                        break
                if active:
                    multi.select(POLL)
        except BaseException as exc:  # a fault of the lane itself: no task is left hanging
            log.exception("job %s: the lane of small objects failed", self.job.id)
            for easy, small in list(active.items()):
                _quietly(lambda easy=easy: multi.remove_handle(easy))
                if budget is not None:
                    budget.release()
                self._abandon(small)
                self._fail(small.task, exc)
            while waiting:
                self._fail(waiting.popleft(), exc)
            while True:  # and those still to come
                try:
                    item = self._queue.get(timeout=POLL if not ending else 0)
                except queue.Empty:
                    if ending:
                        break
                    continue
                if item is _END:
                    ending = True
                else:
                    self._fail(item, exc)
        finally:
            for easy in idle:
                easy.close()
            multi.close()

    def _configure(self, easy: Any, small: _Small) -> None:
        remote = small.s.remote
        connect, read = remote.connect_timeout, remote.read_timeout
        configure(
            easy,
            _wire_url(small.task.link),
            remote.headers,
            None,
            connect,
            small.on_header,
            small.on_write,
        )
        # silence: as the transport's read timeout, less than a byte a second for that long
        easy.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        easy.setopt(pycurl.LOW_SPEED_TIME, max(1, int(read)))
        if self.job._opts.timeout:
            easy.setopt(pycurl.TIMEOUT_MS, max(1, int(self.job._opts.timeout * 1000)))

    def _start(self, task: _Task) -> _Small | None:
        """The object made ready (folder, locked ``.part``), or ``None``: failed or handed off."""
        from .bars import _TaskProgress

        job = self.job
        try:
            job._folders.prepare(task.name, task.path)
            if os.path.lexists(task.path):  # current? a folder? the engine's questions
                self.handoff(task, None, 0.0)
                return None
            remote = CurlRemote(task.link, headers=self.headers, timeout=self.timeout)
            settings = _Settings(
                remote=remote,
                path=task.path,
                key=os.path.abspath(task.path),
                part=part_path(task.path),
                checksum=self.checksum_of(task),
                expected_size=task.size,
                journal=self.manifest,
                segment_threshold=self.threshold,
                fsync=self.fsync,
                abort=job._abort,
                tunables=self.tunables,
            )
            fd = _lock_part(settings, wait=False)  # never wait in the lane's one thread
        except BlockingIOError:  # another process downloads it: the engine waits for it
            self.handoff(task, None, 0.0)
            return None
        except Exception as exc:  # noqa: BLE001 - this object's error
            self._fail(task, exc)
            return None
        if fd is None or os.fstat(fd).st_size:  # placed by another process, or to resume
            if fd is not None:
                os.close(fd)
            self.handoff(task, None, 0.0)
            return None
        entry = [task.name, 0, task.size]
        with job._lock:
            job._current[task.name] = entry
        return _Small(task, settings, fd, _TaskProgress(job, entry))

    def _ended(
        self,
        multi: Any,
        easy: Any,
        small: _Small,
        failure: tuple[int, str] | None,
        idle: list[Any],
        budget: Any,
    ) -> None:
        multi.remove_handle(easy)
        idle.append(easy)  # reset below, once what it knows of a failure is read
        if budget is not None:
            budget.release()
        if small.failed or (failure is not None and not small.refused):
            error = self._error(small, easy, failure)
            easy.reset()
            self._abandon(small)
            self._after_failure(small, error)
            return
        easy.reset()
        if small.refused or small.received != small.length:
            why = small.refused or "a short body"
            log.debug("%s goes to the engine: %s", small.s.remote.display, why)
            self._abandon(small)
            self.handoff(small.task, None, 0.0)
            return
        s = small.s
        transfer = small.transfer
        transfer.received = small.received
        transfer.headers = headers = small.headers
        transfer.validator = _validator(headers)
        try:
            try:
                small.write_held()
                transfer._check_size(small.length)
                result = transfer._finish(small.length)
            finally:
                os.close(small.fd)
        except IncompleteDownloadError:
            small.progress.close()
            _quietly(lambda: os.unlink(s.part))
            self.handoff(small.task, None, 0.0)
            return
        except Exception as exc:  # noqa: BLE001 - checksum, size, a .part not ours
            small.progress.close()
            self._fail(small.task, exc)
            return
        log.info(
            "placed %s (%d bytes in %.2f s)", s.path, result.size, time.monotonic() - small.started
        )
        if self.manifest is not None:
            source = s.remote.display  # redact(link), as fetch_http records it
            attrs = attrs_from_headers(source, headers)
            record(
                self.manifest,
                s.path,
                with_verified(attrs, result, path=s.path, confirm=self.verified),
            )
        small.progress.close()
        self._done(small.task, Fetched(s.path, False, result.size, result.received))

    def _error(self, small: _Small, easy: Any, failure: tuple[int, str] | None) -> Exception:
        """The error the transport would have raised for this attempt (requests' kinds)."""
        exchange = small.exchange
        if small.failed:
            headers = exchange.headers()
            status = exchange.status
            kind = "Client" if status < 500 else "Server"
            return requests.HTTPError(
                f"{status} {kind} Error: {exchange.reason} for url: {exchange.display}",
                response=_response(exchange, headers, b""),
            )
        assert failure is not None
        exchange.failure = failure
        if exchange.headers_done and exchange.status:
            return IncompleteDownloadError(
                f"{exchange.display}: the connection broke: {redact_text(failure[1])} "
                f"(libcurl error {failure[0]})"
            )
        exchange.handles = _Reading(easy)  # type: ignore[assignment]
        return _connection_error(exchange, small.s.remote.connect_timeout)

    def _after_failure(self, small: _Small, error: Exception) -> None:
        """A failed attempt counts as the object's first: the engine gets the retries left,
        after the pause the engine would make (``Retry-After`` honoured)."""
        limit = self.job._opts.timeout
        if limit and time.monotonic() - small.started >= limit:
            self._fail(  # as the engine's time limit says it (the engine's own words)
                small.task,
                DownloadTimeoutError(
                    f"{small.s.remote.display} took longer than the time limit of {limit:g} s "
                    "for one attempt (connection, headers and body); it is not retried"
                ),
            )
            return
        retryable, retry_after = small.transfer._classify(error)  # the engine's rule
        retries = self.policy.retries
        if not retryable or retries == 0:
            self._fail(small.task, error)
            return
        if unreachable(error):  # one quick retry, as the engine gives it
            self.handoff(small.task, 0, min(UNREACHABLE_DELAY, self.policy.backoff))
            return
        delay = self.policy.delay(0, retry_after)
        log.debug(
            "%s failed (%s); the engine retries it in %.2fs",
            small.s.remote.display,
            type(error).__name__,
            delay,
        )
        self.handoff(small.task, retries - 1, delay)

    def _abandon(self, small: _Small) -> None:
        """Leave no ``.part`` of ours behind an answer the engine takes over."""
        try:
            if small.recorded:
                small.transfer._truncate()  # and its resume record forgotten
            else:
                os.ftruncate(small.fd, 0)
            _remove_if_empty(small.s.part, small.fd)
        except OSError:
            pass
        _quietly(lambda: os.close(small.fd))
        small.progress.close()

    def _stopped(self, small: _Small) -> None:
        """Aborted: what arrived stays in the ``.part`` (an empty one is removed)."""
        _remove_if_empty(small.s.part, small.fd)
        _quietly(lambda: os.close(small.fd))
        small.progress.close()
        self._fail(small.task, DownloadAborted("job aborted"))

    def _done(self, task: _Task, fetched: Fetched) -> None:
        future: Future = Future()
        future.set_result(fetched)
        self.job._task_done(task, future, self.window, counted_bytes=True)

    def _fail(self, task: _Task, exc: BaseException) -> None:
        future: Future = Future()
        future.set_exception(exc)
        self.job._task_done(task, future, self.window, counted_bytes=True)
