"""Progress reporting: a do-nothing callback, a throttle, and a lazy tqdm adapter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "Callback",
    "FunctionCallback",
    "Throttled",
    "TqdmCallback",
    "as_callback",
    "bar_label",
]

#: Characters a bar's label takes at most: the bar keeps the rest of the line.
LABEL_WIDTH = 32


def bar_label(text: str, width: int = LABEL_WIDTH) -> str:
    """A bar's label: the object's name for a link (never its query), at most ``width`` wide.

    A longer name keeps its end (where shard numbers and extensions are).

    Examples
    --------
    >>> from dlutils.progress import bar_label
    >>> bar_label("https://bucket.s3.amazonaws.com/train/shard-0001.tar?X-Amz-Signature=ab12")
    'shard-0001.tar'
    >>> bar_label("hf://datasets/org/name@main/data/train.csv")
    'train.csv'
    >>> bar_label("a-very-long-name-of-an-object-in-a-bucket-0001.parquet")
    '…object-in-a-bucket-0001.parquet'
    """
    from .names import object_name, redact

    if "://" in text:
        text = object_name(text) or redact(text).rstrip("/").rsplit("/", 1)[-1]
    text = text.replace("\n", " ")
    return text if len(text) <= width else "…" + text[-(width - 1) :]


class Callback:
    """Receives the size of a transfer and its progress in bytes; does nothing by default.

    Subclass it, or pass a plain function ``f(nbytes)`` wherever a callback is
    accepted: it receives byte increments.
    """

    def set_size(self, size: int | None) -> None:
        """The total number of bytes expected, or ``None`` when unknown."""

    def update(self, nbytes: int) -> None:
        """``nbytes`` more bytes arrived (negative when a restart discards bytes)."""

    def close(self) -> None:
        """The transfer ended, successfully or not."""


class FunctionCallback(Callback):
    """Adapts a function ``f(nbytes)`` to :class:`Callback`."""

    def __init__(self, func: Callable[[int], Any]):
        self.func = func

    def update(self, nbytes: int) -> None:
        self.func(nbytes)


def as_callback(progress: Callback | Callable[[int], Any] | None) -> Callback:
    """Return a :class:`Callback` for a callback, a function or ``None``."""
    if progress is None:
        return Callback()
    if isinstance(progress, Callback):
        return progress
    if callable(progress):
        return FunctionCallback(progress)
    raise TypeError(f"progress={progress!r} is not valid: pass a dlutils Callback or f(nbytes)")


class Throttled(Callback):
    """Forwards updates to ``inner`` at most once per ``interval`` seconds (thread-safe).

    Bytes are accumulated between calls, so nothing is lost; :meth:`flush` (called by
    :meth:`close`) delivers the remainder. Bytes held longer than ``interval`` are
    delivered by a shared background thread, so a transfer that stalls still shows
    everything it received: ``inner`` may therefore be called from that thread.
    """

    def __init__(
        self,
        inner: Callback,
        interval: float = 0.1,
        *,
        clock: Callable[[], float] = time.monotonic,
        background: bool | None = None,
    ):
        self.inner = inner
        self.interval = interval
        self.clock = clock
        # The background flusher reads the real clock: with an injected one, tests decide.
        self.background = (clock is time.monotonic) if background is None else background
        self._pending = 0
        self._last = clock()
        self._lock = threading.Lock()
        #: Whether the background thread watches this callback: asked once, not per chunk.
        self._watched = False

    def set_size(self, size: int | None) -> None:
        self.inner.set_size(size)

    def update(self, nbytes: int) -> None:
        with self._lock:
            self._pending += nbytes
            now = self.clock()
            if now - self._last < self.interval:
                held = True
                watch = self.background and not self._watched
                self._watched = self._watched or watch
            else:
                held = False
                pending, self._pending, self._last = self._pending, 0, now
        if held:
            if watch:
                _flusher.watch(self)
            return
        if pending:
            self.inner.update(pending)

    def _flush_if_due(self) -> bool:
        """Deliver held bytes older than the interval; True while some remain held.

        With none held, it leaves the background thread's watch, in the same step as
        it looks (so an update that holds bytes right after asks to be watched again).
        """
        with self._lock:
            if not self._pending:
                self._watched = False
                _flusher.forget(self)
                return False
            now = self.clock()
            if now - self._last < self.interval:
                return True
            pending, self._pending, self._last = self._pending, 0, now
        self.inner.update(pending)
        return False

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, 0
            self._last = self.clock()
        if pending:
            self.inner.update(pending)

    def close(self) -> None:
        self.flush()
        self.inner.close()


class _Flusher:
    """One daemon thread that delivers bytes held back by :class:`Throttled` callbacks."""

    def __init__(self, period: float = 0.1):
        self.period = period
        self._watched: set[Throttled] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, throttled: Throttled) -> None:
        with self._lock:
            self._watched.add(throttled)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="dlutils-progress", daemon=True
                )
                self._thread.start()

    def forget(self, throttled: Throttled) -> None:
        with self._lock:
            self._watched.discard(throttled)

    def _loop(self) -> None:
        while True:
            time.sleep(self.period)
            with self._lock:
                watched = list(self._watched)
            for throttled in watched:
                try:
                    throttled._flush_if_due()  # it leaves the watch once nothing is held
                except Exception:  # noqa: BLE001 - a broken callback must not stop the others
                    with throttled._lock:
                        throttled._watched = False  # a later held update asks again
                        self.forget(throttled)


_flusher = _Flusher()


class TqdmCallback(Callback):
    """A ``tqdm.auto`` byte bar, created on first use.

    ``desc`` is a link or a name; the bar shows :func:`bar_label` of it (the object's
    name, never a query). In a notebook ``tqdm.auto`` draws a widget, which needs
    ``ipywidgets`` (``pip install "dlutils-download[notebook]"``).
    """

    def __init__(self, desc: str = "", **tqdm_kwargs: Any):
        self.desc = bar_label(desc)
        self.kwargs = tqdm_kwargs
        self._bar: Any = None

    def _ensure(self, total: int | None = None) -> Any:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                desc=self.desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                **self.kwargs,
            )
        return self._bar

    def set_size(self, size: int | None) -> None:
        bar = self._ensure(size)
        if bar.total != size:
            bar.total = size
            bar.refresh()

    def update(self, nbytes: int) -> None:
        self._ensure().update(nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
