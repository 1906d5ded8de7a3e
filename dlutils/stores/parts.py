"""A large object into S3 over several connections: each multipart part is one range.

The object is cut into the upload's parts (8 MiB, or more for objects above 80 GB: at
most 10,000 parts); a few threads each ask the server for one part's range (pinned to
the version of the first answer with ``If-Range``), check the answer (a 206 of exactly
that range, of that version and size) and send it as that part. The first answer serves
the part it starts in. Parts already stored by an earlier run are not fetched again.

Used only when no checksum is given (a checksum needs the bytes in order, so such an
object is streamed in order instead) and the server accepts ranges and names the version.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..budget import current_budget
from ..control import AbortEvent, timed_out
from ..errors import DownloadAborted, IncompleteDownloadError
from ..transfer import Body
from ..transfer.checks import _same_version

__all__ = ["VersionChanged", "send_in_parts", "watching", "MAX_CONNECTIONS"]

log = logging.getLogger("dlutils")

#: Connections one object may use at once (memory: one part each).
MAX_CONNECTIONS = 8
#: Bytes read from a response at a time.
CHUNK = 1 << 20


@contextlib.contextmanager
def watching(abort: threading.Event | None, body: Body) -> Iterator[None]:
    """While reading ``body``: an :class:`~dlutils.transfer.AbortEvent` set (an abort, or
    the attempt's time running out) interrupts a read blocked on the network at once."""
    if not isinstance(abort, AbortEvent):
        yield
        return
    callback = body.interrupt or (lambda: threading.Thread(target=body.close, daemon=True).start())
    handle = abort.add_callback(callback)
    try:
        yield
    finally:
        abort.remove_callback(handle)


class VersionChanged(Exception):
    """A range answer belongs to another version of the object: start over, in order."""


def send_in_parts(
    upload: Any,
    first: Body,
    offset: int,
    total: int,
    validator: str,
    *,
    opened: Callable[[int, int | None, str | None], Body],
    source: str,
    connections: int,
    retries: int,
    progress: Any,
    limiter: Any,
    abort: threading.Event | None,
    classify: Callable[[BaseException], tuple[bool, float | None]],
) -> int:
    """Fetch the parts of ``[offset, total)`` and send each; return the bytes received.

    ``first`` is an answer starting at ``offset`` (a part boundary); ``upload`` an S3
    upload (its :meth:`put_part` takes a part number and its bytes, from any thread).
    """
    size = upload.part_size
    count = -(-total // size)
    have = {part["PartNumber"] for part in upload.parts}
    own = offset // size + 1
    todo = collections.deque(n for n in range(1, count + 1) if n not in have and n != own)
    lock = threading.Lock()
    failures: list[BaseException] = []
    stop = threading.Event()
    received = [0]

    def bounds(number: int) -> tuple[int, int]:
        start = (number - 1) * size
        return start, min(total, start + size) - 1

    def read(body: Body, length: int) -> bytes:
        data = bytearray()
        while len(data) < length:
            timed_out(abort, source)
            if stop.is_set() or (abort is not None and abort.is_set()):
                raise DownloadAborted(f"{source}: aborted")
            with watching(abort, body):
                chunk = body.read(min(CHUNK, length - len(data)))
            if not chunk:
                raise IncompleteDownloadError(
                    f"{source}: a range ended after {len(data)} of {length} bytes",
                    received=len(data),
                    expected=length,
                )
            if limiter is not None:
                limiter.acquire(len(chunk), abort=abort)
            data += chunk
            with lock:
                received[0] += len(chunk)
            progress.update(len(chunk))
        return bytes(data)

    def fetch(number: int) -> bytes:
        start, end = bounds(number)
        attempts = 0
        while True:
            body = opened(start, end, validator)
            try:
                if (
                    body.status != 206
                    or body.start != start
                    or body.end not in (None, end)
                    or body.total not in (None, total)
                    or not _same_version(body, validator)
                ):
                    raise VersionChanged(f"{source}: a range answer of another version")
                return read(body, end - start + 1)
            except (VersionChanged, DownloadAborted):
                raise
            except Exception as exc:  # noqa: BLE001 - a range cut short: ask for it again
                timed_out(abort, source, exc)
                if abort is not None and abort.is_set():
                    raise DownloadAborted(f"{source}: aborted") from exc
                short = isinstance(exc, IncompleteDownloadError)
                attempts += 1
                if attempts > retries or not (short or classify(exc)[0]):
                    raise
                log.info("%s: part %d again (%s)", source, number, exc)
            finally:
                body.close()

    def work() -> None:
        try:
            while not stop.is_set():
                with lock:
                    if not todo:
                        return
                    number = todo.popleft()
                upload.put_part(number, fetch(number))
        except BaseException as exc:  # noqa: BLE001 - the first failure ends them all
            with lock:
                failures.append(exc)
            stop.set()

    budget = current_budget()
    extra = 0
    while extra < min(connections, MAX_CONNECTIONS, count) - 1:
        if budget is not None and not budget.try_acquire():
            break
        extra += 1
    threads = [
        threading.Thread(target=work, name=f"dlutils-part-{i}", daemon=True) for i in range(extra)
    ]
    for thread in threads:
        thread.start()
    try:
        if own <= count and own not in have:
            start, end = bounds(own)
            try:
                data = read(first, end - start + 1)
            finally:
                first.close()
            upload.put_part(own, data)
        else:
            first.close()
        work()
    except BaseException as exc:
        with lock:
            failures.append(exc)
        stop.set()
    finally:
        for thread in threads:
            thread.join()
        if budget is not None:
            for _ in range(extra):
                budget.release()
    if failures:
        # an abort (or a time limit) is what the caller asked for; any other failure first
        others = [f for f in failures if not isinstance(f, (DownloadAborted, TimeoutError))]
        raise (others or failures)[0]
    return received[0]
