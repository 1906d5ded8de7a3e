"""Object-store destinations: objects streamed into an fsspec store, visible once verified.

:func:`dlutils.destinations.resolve` decides what a destination is; here an object of
any source is streamed into the store (:func:`fetch_to_store`), with its record kept as
the object's metadata (S3) or beside it, since the SQLite manifest of a local folder
cannot live in an object store. fsspec and s3fs are imported on first use.
"""

from __future__ import annotations

from .fetch import fetch_to_store

__all__ = ["fetch_to_store"]
