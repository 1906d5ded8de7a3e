"""The resume record of a partial download: what the journal holds of its ``.part``."""

from __future__ import annotations

import logging
import re
from typing import Any

from .protocols import (
    Remote,
)
from .retries import _quietly

log = logging.getLogger("dlutils")


def _origin_of(remote: Remote) -> str:
    """What a partial download records of where its bytes come from: the link without its
    query and fragment (a signed link signed anew is the same object)."""
    return re.split(r"[?#]", str(getattr(remote, "display", "")), maxsplit=1)[0]


class _Journaled:
    """The journal side of :class:`~dlutils.transfer.engine._Transfer`."""

    def _partial(self) -> dict[str, Any] | None:
        if self.s.journal is None:
            return None
        try:
            info = self.s.journal.get_partial(self.s.key)
        except Exception:  # noqa: BLE001 - a damaged journal only costs a restart
            log.warning("cannot read the resume record of %s", self.s.path, exc_info=True)
            return None
        if not (isinstance(info, dict) and info.get("validator")):
            return None
        # A .part begun from another link (the same name, another server or object) is not
        # this one's to resume: a 206 without validators would splice it onto another object.
        source = info.get("source")
        if source is not None and source != _origin_of(self.s.remote):
            log.debug("%s was begun from %s; starting it from zero", self.s.part, source)
            return None
        return info

    def _record(self, info: dict[str, Any]) -> None:
        if self.s.journal is not None:
            try:
                info = {**info, "source": _origin_of(self.s.remote)}
                self.s.journal.put_partial(self.s.key, info)
            except Exception:  # noqa: BLE001
                log.warning("cannot record resume state of %s", self.s.path, exc_info=True)

    def _forget(self) -> None:
        if self.s.journal is not None:
            _quietly(lambda: self.s.journal.drop_partial(self.s.key))
