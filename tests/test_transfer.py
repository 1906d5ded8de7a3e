"""The transfer engine with a strictly pinned remote, as S3 (IfMatch) and GCS (generation) are."""

from __future__ import annotations

import os

import requests
from conftest import make_random_bytes

from dlutils.errors import RemoteChangedError
from dlutils.freshness import Manifest
from dlutils.sources.http import HttpRemote
from dlutils.transfer import CHUNK_SIZE, download


class PinnedRemote(HttpRemote):
    """An HTTP remote that refuses a changed object instead of sending it whole.

    The Remote protocol allows both answers to a pinned range request whose object
    changed: the whole new object (status 200), or RemoteChangedError.
    """

    def open(self, start=0, end=None, *, if_range=None, headers=None):
        body = super().open(start, end, if_range=if_range, headers=headers)
        if if_range and body.status == 200:
            body.close()
            raise RemoteChangedError(f"{self.display} changed since the part was started")
        return body


def test_a_refused_resume_restarts_from_zero_at_once(http_server, tmp_path):
    old = make_random_bytes(2 * CHUNK_SIZE, seed=1)
    http_server.put("obj.bin", old)
    old_etag = requests.head(http_server.url_for("obj.bin")).headers["ETag"]
    new = make_random_bytes(2 * CHUNK_SIZE, seed=2)
    http_server.put("obj.bin", new)
    target = tmp_path / "obj.bin"
    (tmp_path / "obj.bin.part").write_bytes(old[:CHUNK_SIZE])
    pauses = []
    with Manifest(tmp_path) as journal:
        journal.put_partial(os.path.abspath(target), {"validator": old_etag, "total": len(old)})
        result = download(
            PinnedRemote(http_server.url_for("obj.bin")),
            target,
            journal=journal,
            sleep=pauses.append,
        )
    assert target.read_bytes() == new and result.size == len(new)
    assert pauses == []  # the changed object is fetched again at once, not after backoff
    ranges = [r.range for r in http_server.requests_for("/obj.bin") if r.method == "GET"]
    assert ranges == [f"bytes={CHUNK_SIZE}-", None]
