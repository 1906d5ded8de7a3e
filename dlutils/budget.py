"""One budget of connections shared by the files of a job and the ranges of its big files.

A job of ``connections=N`` makes one :class:`ConnectionBudget` of ``N`` slots. Each file
worker holds a slot while its object downloads (:meth:`ConnectionBudget.hold`); a big
object's extra ranges take more slots only when some are free
(:meth:`ConnectionBudget.try_acquire`) and give them back as they end, so ``N`` is a hard
cap on the requests in flight.

Examples
--------
>>> budget = ConnectionBudget(2)
>>> budget.try_acquire(), budget.try_acquire(), budget.try_acquire()
(True, True, False)
>>> budget.release()
>>> budget.in_use, budget.peak
(1, 2)
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from .errors import DownloadAborted, InvalidInputError

_CURRENT: contextvars.ContextVar[ConnectionBudget | None] = contextvars.ContextVar(
    "dlutils_connection_budget", default=None
)


def current_budget() -> ConnectionBudget | None:
    """The budget the download running in this thread may take extra connections from."""
    return _CURRENT.get()


class ConnectionBudget:
    """``slots`` connections, shared; acquired blocking or, for growth, only when free.

    Parameters
    ----------
    slots : int
        The most connections in use at once (``>= 1``).
    """

    def __init__(self, slots: int):
        if not isinstance(slots, int) or slots < 1:
            raise InvalidInputError(f"slots={slots!r} is not valid: use an int >= 1")
        self.slots = slots
        self.in_use = 0
        #: The most slots ever in use at once.
        self.peak = 0
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return f"ConnectionBudget({self.slots}, in_use={self.in_use})"

    def _take(self) -> None:
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now; never waits."""
        with self._cond:
            if self.in_use >= self.slots:
                return False
            self._take()
            return True

    def acquire(self, abort: threading.Event | None = None) -> None:
        """Wait for a slot; raise :class:`~dlutils.DownloadAborted` once ``abort`` is set."""
        with self._cond:
            while self.in_use >= self.slots:
                if abort is not None and abort.is_set():
                    raise DownloadAborted("aborted while waiting for a free connection")
                self._cond.wait(0.1)
            self._take()

    def release(self) -> None:
        """Give a slot back."""
        with self._cond:
            if self.in_use <= 0:
                raise RuntimeError("ConnectionBudget.release() without a slot taken")
            self.in_use -= 1
            self._cond.notify()

    def hold(self, abort: threading.Event | None = None) -> _Held:
        """Take a slot for one object and make this budget the thread's current one.

        Close the returned handle when the object is done: the slot goes back and the
        thread's previous budget is current again.
        """
        self.acquire(abort)
        return _Held(self, _CURRENT.set(self))


class _Held:
    def __init__(self, budget: ConnectionBudget, token: Any):
        self._budget, self._token = budget, token

    def close(self) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
            self._budget.release()
