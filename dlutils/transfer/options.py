"""What one transfer is asked to do beyond its link and path, in one typed object.

Every source's ``fetch_*`` (and :func:`dlutils.sources.fetch`) takes a
:class:`TransferOptions`: the public functions (``http_download``, ``aws_download``...)
build it once from their keywords, a job builds it once from its
:class:`~dlutils.Options` (:meth:`dlutils.Options.transfer`) and changes only an object's
own fields (``checksum``, ``expected_size``, ``progress``...) with :meth:`replace`.
Values are checked where they are used, by the same parsers as before, so a wrong one
raises the same error.

Examples
--------
>>> from dlutils.transfer import TransferOptions
>>> options = TransferOptions(retries=2, cache=False)
>>> options.replace(checksum="md5:" + "0" * 32).retries
2
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..retry import RetryPolicy

if TYPE_CHECKING:
    from ..freshness import Manifest, ObjectAttrs
    from ..progress import Callback

__all__ = ["TransferOptions", "transfer_options"]

#: Objects at least this big are fetched in parallel ranges when the server allows it.
SEGMENT_THRESHOLD = 64 << 20
#: Default most ranges one object is fetched over at once.
MAX_SEGMENTS = 32


@dataclass(frozen=True)
class TransferOptions:
    """The options of one transfer, as the sources' ``fetch_*`` functions read them.

    The fields are those of :func:`~dlutils.sources.http.http_download` (see it for each
    one's meaning); a source ignores the ones that are not its own (``auth`` and
    ``source`` are http's, ``aws_profile``, ``endpoint_url`` and ``region`` S3's,
    ``token`` GCS's and the Hub's, ``endpoint`` AIStore's and the Hub's, ``headers``
    are not sent to S3). ``transport=None`` is each source's own default (requests; for
    S3, boto3).

    Examples
    --------
    >>> import os, tempfile
    >>> from dlutils import sandbox
    >>> from dlutils.sources import fetch
    >>> from dlutils.transfer import TransferOptions
    >>> server, folder = sandbox.web_server(), tempfile.mkdtemp() + "/"
    >>> options = TransferOptions(retries=2, transport="curl")
    >>> fetched = fetch(server.url + "/shards/shard-0000.tar", folder, options)
    >>> os.path.basename(fetched.path), fetched.skipped
    ('shard-0000.tar', False)
    >>> fetch(server.url + "/shards/shard-0000.tar", folder, options).skipped
    True
    >>> server.stop()
    >>> import shutil; shutil.rmtree(folder)
    """

    cache: bool | str = True
    timeout: Any = None
    session: Any = None
    verbose: bool = False
    headers: Mapping[str, str] | None = None
    checksum: str | None = None
    expected_size: int | None = None
    remote_attrs: ObjectAttrs | None = None
    retries: int = 5
    backoff: float = 0.5
    progress: Callback | Callable[[int], Any] | None = None
    limiter: Any = None
    abort: threading.Event | None = None
    manifest: Manifest | bool | None = None
    segments: int = MAX_SEGMENTS
    segment_threshold: int = SEGMENT_THRESHOLD
    fsync: bool = False
    sleep: Callable[[float], Any] | None = None
    transport: str | None = None
    auth: Any = None
    source: str | None = None
    aws_profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    token: str | bool | None = None
    endpoint: str | None = None
    #: What an object-store destination's fsspec filesystem is made with (``endpoint_url``,
    #: ``key``/``secret``, ``anon``...): a credential carrier, never shown.
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)

    def replace(self, **changes: Any) -> TransferOptions:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def retry_policy(self) -> RetryPolicy:
        """The :class:`~dlutils.retry.RetryPolicy` of ``retries`` and ``backoff``."""
        return RetryPolicy(retries=self.retries, backoff=self.backoff)

    def engine(self, policy: RetryPolicy) -> dict[str, Any]:
        """The keywords :func:`dlutils.transfer.download` takes from these options."""
        return {
            "limiter": self.limiter,
            "abort": self.abort,
            "retry": policy,
            "segments": self.segments,
            "segment_threshold": self.segment_threshold,
            "fsync": self.fsync,
            **({"sleep": self.sleep} if self.sleep is not None else {}),
        }


_FIELDS = frozenset(field.name for field in dataclasses.fields(TransferOptions))


def transfer_options(values: Mapping[str, Any], **fixed: Any) -> TransferOptions:
    """:class:`TransferOptions` from an entry point's keywords (its ``locals()``, read
    before it defines any other name): the names that are fields, then ``fixed``."""
    return TransferOptions(**{**{k: v for k, v in values.items() if k in _FIELDS}, **fixed})
