"""What the tests of object-store destinations share: data, a clean memory:// and S3 looks."""

from __future__ import annotations

import hashlib

import pytest


def blob(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ by ``seed`` (cheap to make, not compressible by accident)."""
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"z" * (n % 32)


@pytest.fixture(name="memory_fs")
def memory_fs_fixture():
    """fsspec's process-wide memory:// filesystem, empty before and after the test."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    yield fs
    fs.store.clear()


def s3_bytes(bucket, key: str) -> bytes:
    """The bytes stored under ``key`` of a ``servers_s3.Bucket``."""
    return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()


def s3_keys(bucket) -> list[str]:
    """Every key of a ``servers_s3.Bucket``, sorted."""
    listing = bucket.client.list_objects_v2(Bucket=bucket.name)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def open_uploads(bucket) -> list:
    """The multipart uploads of a ``servers_s3.Bucket`` begun and neither completed nor aborted."""
    return bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
