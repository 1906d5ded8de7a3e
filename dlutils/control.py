"""Stopping transfers: an abort event that reaches every phase, and time limits per attempt.

:class:`AbortEvent` is what a job hands each of its objects: setting it stops the
transfer within a second whatever it is doing (connecting, waiting for the headers,
reading the body, pausing between attempts), and its ``time_limit`` bounds each attempt.
A transport shows the sockets it is opening through :func:`register_socket`, which is
how an abort reaches a request that has no response yet.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import DownloadTimeoutError, InvalidInputError

__all__ = ["AbortEvent", "register_socket", "opening", "timed_out"]


def _quietly(func: Callable[[], Any]) -> None:
    try:
        func()
    except Exception:  # noqa: BLE001 - interrupting a broken transfer may fail in many ways
        pass


class AbortEvent(threading.Event):
    """A :class:`threading.Event` that also runs callbacks when set, and can time attempts.

    The engine registers the interruption of what it is reading or connecting to, so
    :meth:`set` stops a transfer in any phase at once (waiting for a connection, for
    the headers, or for the next chunk), not at its next chunk.

    Parameters
    ----------
    parent : AbortEvent, optional
        Setting ``parent`` sets this event too (a job's event and one of its objects).
    time_limit : float, optional
        Seconds each attempt at the object may take, from the request to the last byte
        of the body. When they run out the attempt is interrupted like an abort, but
        :meth:`is_set` stays false: the engine raises
        :class:`~dlutils.DownloadTimeoutError` instead of :class:`~dlutils.DownloadAborted`.

    Examples
    --------
    >>> from dlutils.transfer import AbortEvent
    >>> job, obj = AbortEvent(), None
    >>> obj = AbortEvent(job, time_limit=30.0)
    >>> job.set()
    >>> obj.is_set()
    True
    """

    def __init__(self, parent: AbortEvent | None = None, *, time_limit: float | None = None):
        super().__init__()
        if time_limit is not None and (
            not isinstance(time_limit, (int, float)) or not time_limit > 0
        ):
            raise InvalidInputError(f"time_limit={time_limit!r} is not valid: use seconds > 0")
        self._callbacks: dict[int, Callable[[], Any]] = {}
        self._cb_lock = threading.Lock()
        self._next = 0
        self.time_limit = time_limit
        #: Set when the current attempt ran out of time (or the event was set).
        self._wake = threading.Event()
        self._expired = False
        self._timer: list[Any] | None = None
        self._generation = 0
        self._parent = parent
        self._link = parent.add_callback(self.set) if parent is not None else None

    @property
    def expired(self) -> bool:
        """Whether the current attempt ran out of its ``time_limit``."""
        return self._expired

    def add_callback(self, callback: Callable[[], Any]) -> int:
        with self._cb_lock:
            handle = self._next
            self._next += 1
            self._callbacks[handle] = callback
        if self.is_set() or self._expired:
            _quietly(callback)
        return handle

    def remove_callback(self, handle: int) -> None:
        with self._cb_lock:
            self._callbacks.pop(handle, None)

    def _run_callbacks(self) -> None:
        with self._cb_lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            _quietly(callback)

    def set(self) -> None:
        super().set()
        self._wake.set()
        self._run_callbacks()

    def begin_attempt(self) -> None:
        """Start the clock of a new attempt (a no-op without ``time_limit``)."""
        if self.time_limit is None:
            return
        self.end_attempt()
        self._expired = False
        if not self.is_set():
            self._wake.clear()
        self._generation += 1
        generation = self._generation
        self._timer = _WATCHDOG.schedule(self.time_limit, lambda: self._expire(generation))

    def attempt_running(self) -> bool:
        """Whether an attempt's clock is running (or already ran out)."""
        return self._timer is not None or self._expired

    def end_attempt(self) -> None:
        """Stop the clock of the current attempt."""
        timer, self._timer = self._timer, None
        if timer is not None:
            _WATCHDOG.cancel(timer)

    def _expire(self, generation: int) -> None:
        if generation != self._generation or self._timer is None:
            return  # an attempt that already ended: its timer fired as it was cancelled
        self._timer = None
        self._expired = True
        self._wake.set()
        self._run_callbacks()

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True, early, when the event is set or the attempt's time runs out."""
        return self._wake.wait(seconds)

    def close(self) -> None:
        """Stop the clock and detach from the parent."""
        self.end_attempt()
        if self._parent is not None and self._link is not None:
            self._parent.remove_callback(self._link)
            self._link = None


class _Watchdog:
    """One daemon thread firing the time limits of every attempt (a thread each would cost)."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, seconds: float, callback: Callable[[], Any]) -> list[Any]:
        entry = [time.monotonic() + seconds, next(self._order), callback]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(
                    target=self._loop, name="dlutils-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def cancel(self, entry: list[Any]) -> None:
        entry[2] = None  # dropped when it reaches the top of the heap

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                callback = heapq.heappop(self._heap)[2]
            if callback is not None:
                _quietly(callback)


_WATCHDOG = _Watchdog()

_opening = threading.local()


class _OpenScope:
    """The sockets a request being opened in this thread uses; an abort shuts them down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._cancelled = False

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            cancelled = self._cancelled
        if cancelled:
            _shut(sock)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def register_socket(sock: socket.socket) -> None:
    """Let an abort (or a time limit) reach ``sock`` while this thread opens a request.

    A transport calls it for the socket it connects and the one it sends a request
    on, before it blocks on them: while the engine waits for a connection or for the
    headers, :meth:`AbortEvent.set` shuts the socket down, which wakes the blocked call
    at once. Outside of an opening it does nothing.
    """
    scopes = getattr(_opening, "scopes", None)
    if scopes:
        for scope in scopes:
            scope.add(sock)


@contextmanager
def opening(*events: threading.Event | None) -> Iterator[None]:
    """While the body runs, an :class:`AbortEvent` among ``events`` interrupts what it opens."""
    watched = [event for event in events if isinstance(event, AbortEvent)]
    if not watched:
        yield
        return
    scope = _OpenScope()
    stack = getattr(_opening, "scopes", None)
    if stack is None:
        stack = _opening.scopes = []
    stack.append(scope)
    handles = [(event, event.add_callback(scope.cancel)) for event in watched]
    try:
        yield
    finally:
        for event, handle in handles:
            event.remove_callback(handle)
        stack.remove(scope)


def timed_out(abort: threading.Event | None, what: str, exc: BaseException | None = None) -> None:
    """Raise :class:`DownloadTimeoutError` when ``abort``'s attempt ran out of time."""
    if isinstance(abort, AbortEvent) and abort.expired and not abort.is_set():
        raise DownloadTimeoutError(
            f"{what} took longer than the time limit of {abort.time_limit:g} s for one "
            "attempt (connection, headers and body); it is not retried"
        ) from exc
