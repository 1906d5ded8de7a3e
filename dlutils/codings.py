"""Decoders for a ``Content-Encoding`` a server applied although it was not asked for.

The engine asks for bytes as stored (``Accept-Encoding: identity``). A server that
compresses anyway sends a body that is not the object: :func:`decoder` turns it back
into the object's bytes, as requests (and so pyvo and pooch) would, reading at most
as many decoded bytes as the caller asks for, so that a small compressed body can
never flood the disk. gzip and deflate are decoded with :mod:`zlib`; ``br`` and
``zstd`` only when their modules (``brotli``/``brotlicffi``, ``zstandard``) are present.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["decoder", "known_codings", "split_codings", "CodingError", "EndedEarly"]

#: Raw bytes asked of the body per step; the decoded output is bounded separately.
_RAW_CHUNK = 64 * 1024


class CodingError(ValueError):
    """A compressed body cannot be decoded: its bytes are not what its coding says."""


class EndedEarly(CodingError):
    """A compressed body ended before its compressed stream did."""


def split_codings(value: str | None) -> list[str]:
    """The codings of a ``Content-Encoding`` value, in the order they were applied.

    ``identity`` (and an empty value) means none.

    Examples
    --------
    >>> split_codings("gzip"), split_codings(" GZIP , br"), split_codings("identity")
    (['gzip'], ['gzip', 'br'], [])
    """
    codings = [c.strip().lower() for c in (value or "").split(",")]
    return [c for c in codings if c and c != "identity"]


def _module(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def known_codings() -> set[str]:
    """The codings :func:`decoder` can undo here."""
    known = {"gzip", "x-gzip", "deflate"}
    if _module("brotli", "brotlicffi") is not None:
        known.add("br")
    if _module("zstandard") is not None:
        known.add("zstd")
    return known


class _Zlib:
    """gzip (several members allowed) or deflate (zlib-wrapped or raw, as browsers accept)."""

    def __init__(self, coding: str):
        self.gzip = coding in ("gzip", "x-gzip")
        self.raw_fallback = not self.gzip
        self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)
        self.seen = b""  # deflate: what was fed before the format was known
        self.done = False

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self.done:
            return b""  # bytes after the last member are not part of the object
        try:
            out = self.obj.decompress(data, max_length)
        except zlib.error:
            if not self.raw_fallback:
                raise
            self.raw_fallback = False  # not zlib-wrapped: raw deflate, from the beginning
            self.obj = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self.obj.decompress(self.seen + data, max_length)
        if self.raw_fallback:
            self.seen += data
            if out or self.obj.eof:
                self.raw_fallback, self.seen = False, b""
        if self.obj.eof:
            rest = self.obj.unused_data
            if self.gzip and rest.startswith(b"\x1f\x8b"):  # another member follows
                self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                return out + self.decompress(rest, max(0, max_length - len(out)) or 1)
            self.done = True
        return out

    @property
    def tail(self) -> bytes:
        return b"" if self.done else self.obj.unconsumed_tail

    @property
    def complete(self) -> bool:
        return self.done or self.obj.eof


class _Whole:
    """A decoder with no output bound (brotli, zstandard): output is buffered by the caller."""

    def __init__(self, coding: str):
        if coding == "br":
            self.obj = _module("brotli", "brotlicffi").Decompressor()
            self.step: Callable[[bytes], bytes] = self.obj.process
            self.finished = lambda: bool(getattr(self.obj, "is_finished", lambda: True)())
        else:
            self.obj = _module("zstandard").ZstdDecompressor().decompressobj()
            self.step = self.obj.decompress
            self.finished = lambda: bool(getattr(self.obj, "eof", True))

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self.step(data) if data else b""

    tail = b""

    @property
    def complete(self) -> bool:
        return self.finished()


class _Reader:
    """Reads decoded bytes from ``read`` (raw bytes) through one coding."""

    def __init__(self, read: Callable[[int], bytes], coding: str):
        self.read_raw = read
        self.coding = coding
        self.stage: Any = _Zlib(coding) if coding in ("gzip", "x-gzip", "deflate") else None
        if self.stage is None:
            self.stage = _Whole(coding)
        self.buffer = b""
        self.ended = False

    def read(self, size: int) -> bytes:
        size = max(1, size)
        while True:
            if self.buffer:
                out, self.buffer = self.buffer[:size], self.buffer[size:]
                return out
            if self.stage.tail:
                raw = self.stage.tail
            elif self.ended:
                return b""
            else:
                raw = self.read_raw(_RAW_CHUNK)  # its errors (the network's) pass as they are
                if not raw:
                    self.ended = True
                    if not self.stage.complete:
                        raise EndedEarly(f"the {self.coding} stream ended before its end")
                    return b""
            try:
                self.buffer = self.stage.decompress(raw, size)
            except Exception as exc:  # noqa: BLE001 - zlib, brotli and zstandard errors alike
                raise CodingError(f"the {self.coding} stream is damaged: {exc}") from exc


def decoder(read: Callable[[int], bytes], codings: list[str]) -> Callable[[int], bytes]:
    """A ``read(n)`` giving the decoded bytes of a body whose raw reader is ``read``.

    ``codings`` are in the order the server applied them (:func:`split_codings`);
    each must be in :func:`known_codings`. A damaged or cut stream raises
    :class:`CodingError` (:class:`EndedEarly` when cut).

    Examples
    --------
    >>> import gzip, io
    >>> read = decoder(io.BytesIO(gzip.compress(b"hello " * 3)).read, ["gzip"])
    >>> read(5), read(100), read(100)
    (b'hello', b' hello hello ', b'')
    """
    for coding in reversed(codings):
        read = _Reader(read, coding).read
    return read
