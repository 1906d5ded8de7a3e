"""Checksum specifications (``"sha256:<hex>"``) and incremental hashers, crc32c included."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidInputError

__all__ = ["Checksum", "parse_checksum", "new_hasher", "file_digest", "ALGORITHMS", "crc32c"]

#: Algorithm name -> length of its hex digest.
ALGORITHMS: dict[str, int] = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "crc32c": 8}

_HEX = re.compile(r"^[0-9a-fA-F]+$")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algorithm`` (``"sha256"``, ``"md5"``...) and its lowercase hex."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def parse_checksum(spec: str | Checksum | None) -> Checksum | None:
    """Parse ``"<algorithm>:<hex digest>"`` into a :class:`Checksum`.

    Parameters
    ----------
    spec : str, Checksum or None
        For instance ``"sha256:9f86d0..."``, ``"md5:..."`` or ``"crc32c:..."``.
        ``None`` means no checksum.

    Returns
    -------
    Checksum or None

    Raises
    ------
    dlutils.InvalidInputError
        (a ``ValueError``) when the text does not parse, naming the value and a correct form.

    Examples
    --------
    >>> from dlutils.checksums import parse_checksum
    >>> parse_checksum("MD5:D41D8CD98F00B204E9800998ECF8427E")
    Checksum(algorithm='md5', hexdigest='d41d8cd98f00b204e9800998ecf8427e')
    >>> parse_checksum("sha256:xyz")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: checksum 'sha256:xyz' is not valid: sha256 needs 64 hex \
digits, got 'xyz'; write it as 'sha256:<64 hex digits>', for instance 'sha256:e3b0c442...b855'
    """
    if spec is None or isinstance(spec, Checksum):
        return spec
    if not isinstance(spec, str):
        raise InvalidInputError(
            f"checksum {spec!r} is not valid: expected a string such as 'sha256:<hex digest>'"
        )
    algorithm, sep, digest = spec.strip().partition(":")
    algorithm = algorithm.lower().replace("-", "")
    example = "'sha256:e3b0c442...b855'"
    if not sep or algorithm not in ALGORITHMS:
        known = ", ".join(ALGORITHMS)
        raise InvalidInputError(
            f"checksum {spec!r} is not valid: expected '<algorithm>:<hex digest>' with an "
            f"algorithm among {known}, for instance {example}"
        )
    width = ALGORITHMS[algorithm]
    if len(digest) != width or not _HEX.match(digest):
        raise InvalidInputError(
            f"checksum {spec!r} is not valid: {algorithm} needs {width} hex digits, got "
            f"{digest!r}; write it as '{algorithm}:<{width} hex digits>', for instance {example}"
        )
    return Checksum(algorithm, digest.lower())


class _Crc32c:
    """crc32c (Castagnoli) hasher; uses ``google_crc32c`` or ``crc32c`` when installed."""

    def __init__(self) -> None:
        self._value = 0
        self._fast = _fast_crc32c()

    def update(self, data: bytes) -> None:
        if self._fast is not None:
            self._value = self._fast(data, self._value)
        else:
            self._value = _crc32c_python(data, self._value)

    def hexdigest(self) -> str:
        return f"{self._value:08x}"


def _fast_crc32c():
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return lambda data, value: google_crc32c.extend(value, data)
    except ImportError:
        pass
    try:
        import crc32c as _crc32c_mod

        return lambda data, value: _crc32c_mod.crc32c(data, value)
    except ImportError:
        return None


def _make_crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE: list[int] = _make_crc32c_table()


def _crc32c_python(data: bytes, value: int = 0) -> int:
    table = _CRC32C_TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes, value: int = 0) -> int:
    """Return the crc32c of ``data``, continuing from ``value``.

    Examples
    --------
    >>> from dlutils.checksums import crc32c
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    fast = _fast_crc32c()
    return fast(data, value) if fast is not None else _crc32c_python(data, value)


def new_hasher(algorithm: str) -> Hasher:
    """Return an incremental hasher for ``algorithm`` (a key of :data:`ALGORITHMS`)."""
    if algorithm == "crc32c":
        return _Crc32c()
    if algorithm not in ALGORITHMS:
        raise InvalidInputError(
            f"checksum algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}"
        )
    return hashlib.new(algorithm)


def file_digest(path: str | os.PathLike, algorithm: str, *, block_size: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in ``block_size`` blocks."""
    hasher = new_hasher(algorithm)
    with open(path, "rb") as f:
        while block := f.read(block_size):
            hasher.update(block)
    return hasher.hexdigest()


def b64_to_hex(value: str) -> str | None:
    """Turn a base64 digest (as in ``Content-MD5`` or ``x-goog-hash``) into lowercase hex."""
    try:
        return base64.b64decode(value.strip(), validate=True).hex()
    except (binascii.Error, ValueError):
        return None
