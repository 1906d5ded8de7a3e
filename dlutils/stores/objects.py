"""Objects in a store: what is known of one (its record), and how its bytes get there.

An object appears under its final key only once its bytes are complete and verified:

- ``s3://`` (s3fs): a small object is one ``PutObject`` with its record as user
  metadata; a larger one a multipart upload, parts of :data:`PART_SIZE` bytes uploaded
  as they arrive, completed only after verification (aborted otherwise). The upload id
  and the source version it is pinned to are kept in a small record object beside the
  data (``<folder>/.dlutils/<name>.upload.json``) so that a later run can list the parts
  already there and go on from them.
- any other fsspec store (``memory://``): the bytes go to a hidden key beside the
  object (``<folder>/.dlutils/<name>.tmp``), moved to the final key once verified; the
  record is a JSON object beside it (``<folder>/.dlutils/<name>.json``).
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..freshness import ObjectAttrs

__all__ = ["StoreObject", "Upload", "PART_SIZE", "open_object"]

log = logging.getLogger("dlutils")

#: Bytes per multipart part (S3 needs at least 5 MiB for every part but the last).
PART_SIZE = 8 << 20
#: The most parts one S3 upload may have.
MAX_PARTS = 10_000
#: Parts of one upload sent at once while the next ones arrive (memory: this many parts).
PARTS_IN_FLIGHT = 2
#: The hidden folder beside the objects where dlutils keeps its records and uploads.
WORK = ".dlutils"
#: The S3 user-metadata key holding the object's record (JSON of an ObjectAttrs).
META_KEY = "dlutils"


def _fs_and_path(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url, **dict(storage_options or {}))
    return fs, path


@dataclass
class StoreObject:
    """One object of a store: its filesystem, its path there, and the URL given."""

    fs: Any
    path: str
    url: str

    @property
    def is_s3(self) -> bool:
        protocol = self.fs.protocol
        return "s3" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))

    def _beside(self, suffix: str) -> str:
        folder, name = posixpath.split(self.path)
        return posixpath.join(folder, WORK, name + suffix)

    def _bucket_key(self, path: str | None = None) -> tuple[str, str]:
        bucket, _, key = (path or self.path).partition("/")
        return bucket, key

    # -- what is there ------------------------------------------------------------

    def record(self) -> tuple[int, ObjectAttrs | None] | None:
        """``(size, record)`` of the object under the final key, or ``None`` if absent."""
        if self.is_s3:
            bucket, key = self._bucket_key()
            try:
                head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            except FileNotFoundError:
                return None
            meta = head.get("Metadata") or {}
            return int(head["ContentLength"]), _attrs(meta.get(META_KEY))
        try:
            size = self.fs.size(self.path)
        except FileNotFoundError:
            return None
        try:
            text = self.fs.cat_file(self._beside(".json")).decode()
        except FileNotFoundError:
            text = None
        return int(size), _attrs(text)

    # -- writing ------------------------------------------------------------------

    def upload(self, attrs: ObjectAttrs) -> Upload:
        """A new upload of this object, recorded with ``attrs`` once it is committed."""
        if self.is_s3:
            return _S3Upload(self, attrs)
        return _MovedUpload(self, attrs)

    def pending(self) -> Upload | None:
        """The unfinished upload of an earlier run that can be continued, if any."""
        if not self.is_s3:
            return None
        return _S3Upload.find(self)


class Upload:
    """Bytes on their way to one object: written in order, then committed or discarded."""

    #: Bytes already in the store (a resumed upload), to which :meth:`write` appends.
    offset: int = 0
    #: The record an earlier run pinned this upload to (a resumed upload).
    pinned: ObjectAttrs | None = None
    #: Whether parts may be sent out of order, from several threads (:meth:`put_part`).
    parallel: bool = False
    #: Bytes per part, where there are parts.
    part_size: int = PART_SIZE

    def put_part(self, number: int, data: bytes) -> None:
        """Send part ``number`` (from 1) of :attr:`part_size` bytes (the last: fewer)."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def commit(self, attrs: ObjectAttrs) -> None:
        """Make the object appear under its final key, with ``attrs`` as its record."""
        raise NotImplementedError

    def discard(self) -> None:
        """Drop everything written; nothing appears under the final key."""
        raise NotImplementedError

    def keep(self) -> None:
        """Stop, keeping what was uploaded for a later run (only where it can resume)."""
        self.discard()

    def start(self, attrs: ObjectAttrs) -> None:
        """Pin a new upload to the version ``attrs`` describes: the record it will have."""


class _MovedUpload(Upload):
    """Write to a hidden key, then move it to the final key (any fsspec store)."""

    def __init__(self, obj: StoreObject, attrs: ObjectAttrs):
        self.obj = obj
        self.tmp = obj._beside(f".{uuid.uuid4().hex[:12]}.tmp")
        self.file = obj.fs.open(self.tmp, "wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self, attrs: ObjectAttrs) -> None:
        self.file.close()
        fs = self.obj.fs
        # the object first: a record never describes bytes that are not there yet
        fs.mv(self.tmp, self.obj.path)
        fs.pipe_file(self.obj._beside(".json"), json.dumps(attrs.to_dict()).encode())

    def discard(self) -> None:
        try:
            self.file.close()
        finally:
            try:
                self.obj.fs.rm_file(self.tmp)
            except FileNotFoundError:
                pass


class _S3Upload(Upload):
    """A multipart upload through s3fs's calls; one ``PutObject`` when it stays small."""

    parallel = True

    def __init__(self, obj: StoreObject, attrs: ObjectAttrs, state: dict[str, Any] | None = None):
        self.obj = obj
        self.bucket, self.key = obj._bucket_key()
        self.attrs = attrs
        self.buffer = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        self.part_size = PART_SIZE
        self._sending: list[Future] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        if state is not None:
            self.upload_id = state["upload_id"]
            self.part_size = int(state["part_size"])
            self.pinned = _attrs(json.dumps(state["attrs"]))
            self.parts = state["parts"]
            self.offset = sum(p["Size"] for p in self.parts)
            self.parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in self.parts]

    @classmethod
    def find(cls, obj: StoreObject) -> _S3Upload | None:
        """The upload an earlier run left for ``obj``: its whole parts, in order from 1."""
        fs = obj.fs
        marker = obj._beside(".upload.json")
        try:
            state = json.loads(fs.cat_file(marker))
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("ignoring unreadable upload record %s", marker)
            return None
        bucket, key = obj._bucket_key()
        try:
            listing = fs.call_s3(
                "list_parts", Bucket=bucket, Key=key, UploadId=state.get("upload_id", "")
            )
        except (FileNotFoundError, OSError) as exc:  # aborted or expired: start over
            log.info("upload of %s cannot be continued (%s); starting over", _shown(obj.url), exc)
            _quiet_rm(fs, marker)
            return None
        size = int(state.get("part_size", 0))
        parts = []
        for part in sorted(listing.get("Parts", []), key=lambda p: p["PartNumber"]):
            if part["PartNumber"] != len(parts) + 1 or part["Size"] != size:
                break  # only whole parts in order from the first one can be kept
            parts.append(part)
        state["parts"] = parts
        return cls(obj, ObjectAttrs(), state)

    def start(self, attrs: ObjectAttrs) -> None:
        self.attrs = attrs
        if attrs.size:  # S3 takes at most 10,000 parts: bigger ones for the largest objects
            self.part_size = max(PART_SIZE, -(-attrs.size // (MAX_PARTS << 20)) << 20)

    def put_part(self, number: int, data: bytes) -> None:
        with self._lock:
            if self.upload_id is None:
                self._create()
        part = self._upload_part(number, data)
        with self._lock:
            self.parts.append(part)

    def _create(self) -> None:
        fs = self.obj.fs
        # The record is the object's metadata from the start: the upload is completed only
        # once the bytes are verified, so whenever the object exists its record holds.
        meta = {META_KEY: json.dumps(self.attrs.to_dict(), ensure_ascii=True)}
        answer = fs.call_s3(
            "create_multipart_upload", Bucket=self.bucket, Key=self.key, Metadata=meta
        )
        self.upload_id = answer["UploadId"]
        state = {
            "upload_id": self.upload_id,
            "part_size": self.part_size,
            "attrs": self.attrs.to_dict(),
            "key": self.key,
        }
        fs.pipe_file(self.obj._beside(".upload.json"), json.dumps(state).encode())

    def _send_part(self, data: bytes | bytearray) -> None:
        """Send the next part beside the reading: at most :data:`PARTS_IN_FLIGHT` at once."""
        if self.upload_id is None:
            self._create()
        number = len(self.parts) + len(self._sending) + 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="dlutils-part")
        self._sending.append(self._pool.submit(self._upload_part, number, bytes(data)))
        while len(self._sending) >= PARTS_IN_FLIGHT:
            wait(self._sending, return_when=FIRST_COMPLETED)
            self._collect(block=False)
        self._collect(block=False)

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        answer = self.obj.fs.call_s3(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _collect(self, block: bool) -> None:
        """Move the parts sent into :attr:`parts`; a part that failed raises its error."""
        for future in list(self._sending):
            if block or future.done():
                self._sending.remove(future)
                self.parts.append(future.result())

    def _settle(self) -> None:
        """Let the parts in flight end, whatever their outcome; stop the senders."""
        if self._sending:
            wait(self._sending)
            for future in self._sending:
                if future.exception() is None:
                    self.parts.append(future.result())
            self._sending = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            chunk = self.buffer[: self.part_size]
            del self.buffer[: self.part_size]
            self._send_part(chunk)

    def commit(self, attrs: ObjectAttrs) -> None:
        fs = self.obj.fs
        meta = {META_KEY: json.dumps(attrs.to_dict(), ensure_ascii=True)}
        if self.upload_id is None:
            fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer),
                Metadata=meta,
            )  # fmt: skip
            self.buffer = bytearray()
            return
        if self.buffer or not (self.parts or self._sending):
            self._send_part(self.buffer)
            self.buffer = bytearray()
        try:
            self._collect(block=True)
        finally:
            self._settle()
        fs.call_s3(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": sorted(self.parts, key=lambda p: p["PartNumber"])},
        )
        _quiet_rm(fs, self.obj._beside(".upload.json"))
        self.upload_id = None

    def discard(self) -> None:
        self.buffer = bytearray()
        self._settle()  # a part still in flight would outlive the abort otherwise
        if self.upload_id is not None:
            try:
                self.obj.fs.call_s3(
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                )
            except (FileNotFoundError, OSError) as exc:
                log.warning("could not abort the upload of %s: %s", _shown(self.obj.url), exc)
            self.upload_id = None
        _quiet_rm(self.obj.fs, self.obj._beside(".upload.json"))

    def keep(self) -> None:
        """The parts sent stay for a later run; the bytes buffered for the next are dropped."""
        self.buffer = bytearray()
        self._settle()


def _quiet_rm(fs: Any, path: str) -> None:
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def _shown(url: str) -> str:
    from ..names import redact

    return redact(url)


def _attrs(text: str | None) -> ObjectAttrs | None:
    if not text:
        return None
    try:
        return ObjectAttrs.from_dict(json.loads(text))
    except (ValueError, TypeError):
        return None


def check_reachable(url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`~dlutils.InvalidInputError` unless the store ``url`` names can be written.

    S3: the bucket must exist and answer (``HeadBucket``); other stores are local to
    this process (``memory://``) and always can.
    """
    from ..errors import InvalidInputError
    from ..names import redact, redact_text

    obj = open_object(url.rstrip("/") + "/x", storage_options)
    if not obj.is_s3:
        return
    bucket = obj.path.partition("/")[0]
    try:
        obj.fs.call_s3("head_bucket", Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable, say why
        raise InvalidInputError(
            f"dest {redact(url)!r} cannot be written: bucket {bucket!r} did not answer "
            f"({type(exc).__name__}: {redact_text(str(exc))}); create it or check the "
            "endpoint and credentials (AWS_ENDPOINT_URL, AWS_PROFILE)"
        ) from exc


def open_object(url: str, storage_options: Mapping[str, Any] | None = None) -> StoreObject:
    """The object a store URL names (``s3://bucket/key``, ``memory://folder/name``).

    ``storage_options`` go to the fsspec filesystem (``endpoint_url``, ``key``,
    ``secret``, ``anon``...); they may hold credentials and are never shown.
    """
    fs, path = _fs_and_path(url, storage_options)
    return StoreObject(fs, path, url)


def stored(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> Iterator[tuple[str, StoreObject, int, ObjectAttrs | None]]:
    """Every object under the store folder ``url``: ``(name relative to it, object, size,
    record)``; dlutils's own working objects (under ``.dlutils/``) are not listed."""
    folder = url if url.endswith("/") else url + "/"
    fs, root = _fs_and_path(folder, storage_options)
    root = root.rstrip("/")
    try:
        paths = fs.find(root)
    except FileNotFoundError:
        return
    for path in paths:
        name = path[len(root) :].lstrip("/") if path.startswith(root) else path
        if not name or WORK in name.split("/"):
            continue
        obj = StoreObject(fs, path, folder + name)
        found = obj.record()
        if found is not None:
            yield name, obj, found[0], found[1]


def remove(obj: StoreObject) -> None:
    """Delete ``obj`` and the record kept beside it (where there is one)."""
    obj.fs.rm_file(obj.path)
    if not obj.is_s3:
        _quiet_rm(obj.fs, obj._beside(".json"))
