"""Backend (bucket) jobs: listing, names, skipping, sync, traversal keys, request bodies.

These use the AIStore stand-in cluster (a real paginating HTTP listing); the S3 and GCS
suites run the same kind of job against moto and the GCS emulator.
"""

from __future__ import annotations

import pytest
from conftest import list_files as files

import dlutils
from dlutils import InvalidInputError, Job, State
from dlutils.freshness import Manifest
from dlutils.sandbox.aistore import AisStandIn


@pytest.fixture
def cluster():
    with AisStandIn(page_size=3) as stand_in:
        for i in range(8):
            stand_in.put("data", f"train/{i:02d}.tgz", bytes([i]) * 100, checksum="md5")
        stand_in.put("data", "train/notes.txt", b"notes", checksum="md5")
        stand_in.put("data", "val/00.tgz", b"v" * 10, checksum="md5")
        yield stand_in


def test_a_bucket_folder_with_a_suffix(cluster, tmp_path):
    job = Job.backend(cluster.link("data", "train/"), tmp_path, suffix=".tgz").start()
    status = job.wait(60)
    assert (status.state, status.total, status.finished, status.errors) == (
        State.FINISHED,
        8,
        8,
        0,
    )
    assert files(tmp_path) == [f"{i:02d}.tgz" for i in range(8)]  # relative to the folder
    assert (tmp_path / "03.tgz").read_bytes() == bytes([3]) * 100


def test_prefix_filters_names_and_keeps_folders(cluster, tmp_path):
    status = Job.backend(cluster.link("data"), tmp_path, prefix="train/0").start().wait(60)
    assert status.finished == 8
    assert files(tmp_path) == [f"train/{i:02d}.tgz" for i in range(8)]


def test_a_rerun_skips_everything_without_a_request(cluster, tmp_path):
    Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    cluster.clear_logs()
    status = Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    assert (status.finished, status.skipped, status.bytes) == (10, 10, 0)
    assert cluster.object_requests() == []  # the listing said enough
    cluster.put("data", "train/05.tgz", b"changed", checksum="md5")
    status = Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    assert (status.finished, status.skipped) == (10, 9)
    assert (tmp_path / "train" / "05.tgz").read_bytes() == b"changed"


def test_sync_deletes_exactly_what_vanished(cluster, http_server, tmp_path):
    Job.backend(cluster.link("data", "train/"), tmp_path).start().wait(60)
    # Files that did not come from this bucket folder, in the same destination:
    (tmp_path / "mine.tgz").write_bytes(b"a user's own file")
    http_server.put("web.tgz", b"from a web link")
    dlutils.http_download(http_server.url_for("web.tgz"), tmp_path)
    (tmp_path / "07.tgz").write_bytes(b"edited by hand")  # was downloaded, then changed
    for name in ("train/01.tgz", "train/02.tgz", "train/07.tgz", "train/notes.txt"):
        cluster.delete("data", name)
    status = Job.backend(cluster.link("data", "train/"), tmp_path, sync=True).start().wait(60)
    assert status.deleted == 3  # 01, 02 and notes.txt; 07 was changed by hand and is kept
    assert status.finished == 5 + 3 and status.errors == 0
    assert status.total == 8 and status.pending == 0
    assert files(tmp_path) == [
        "00.tgz",
        "03.tgz",
        "04.tgz",
        "05.tgz",
        "06.tgz",
        "07.tgz",
        "mine.tgz",
        "web.tgz",
    ]
    assert not (tmp_path / "01.tgz").exists() and not (tmp_path / "02.tgz").exists()
    assert (tmp_path / "07.tgz").read_bytes() == b"edited by hand"
    assert (tmp_path / "mine.tgz").exists() and (tmp_path / "web.tgz").exists()
    with Manifest(tmp_path) as manifest:
        assert "01.tgz" not in manifest and "02.tgz" not in manifest
    assert status.to_dict()["deleted_cnt"] == 3


def test_sync_respects_prefix_and_suffix(cluster, tmp_path):
    Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    cluster.delete("data", "train/01.tgz")
    cluster.delete("data", "val/00.tgz")
    status = Job.backend(cluster.link("data"), tmp_path, prefix="val/", sync=True)
    status = status.start().wait(60)
    assert status.deleted == 1
    assert not (tmp_path / "val" / "00.tgz").exists()
    assert (tmp_path / "train" / "01.tgz").exists()  # outside the prefix: not this job's


def test_without_sync_nothing_is_deleted(cluster, tmp_path):
    Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    cluster.delete("data", "train/01.tgz")
    status = Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    assert status.deleted == 0 and (tmp_path / "train" / "01.tgz").exists()


def test_a_traversal_key_is_an_error_for_that_object_only(cluster, tmp_path):
    cluster.put("data", "../evil.tgz", b"evil", checksum="md5")
    cluster.put("data", "a/../../b.tgz", b"evil", checksum="md5")
    dest = tmp_path / "dest"
    status = Job.backend(cluster.link("data"), dest).start().wait(60)
    assert status.errors == 2 and status.finished == 10
    assert sorted(name for name, _ in status.download_errors) == ["../evil.tgz", "a/../../b.tgz"]
    assert all("not safe" in error for _, error in status.download_errors)
    assert files(tmp_path) == [f"dest/{name}" for name in files(dest)]  # nothing outside


def test_a_listing_that_fails_deletes_nothing(cluster, tmp_path):
    Job.backend(cluster.link("data"), tmp_path).start().wait(60)
    status = Job.backend(cluster.link("nobucket"), tmp_path, sync=True).start().wait(60)
    assert status.errors == 1 and status.download_errors[0][0] == "<listing>"
    assert status.deleted == 0 and len(files(tmp_path)) == 10


def test_download_infers_a_backend_job(cluster, tmp_path):
    job = dlutils.download(cluster.link("data", "train/"), tmp_path, suffix=".txt")
    assert job.wait(60).finished == 1
    assert files(tmp_path) == ["notes.txt"]
    with pytest.raises(InvalidInputError, match="apply to bucket links"):
        dlutils.download(cluster.target.url + "/x.bin", tmp_path, suffix=".txt")


def test_from_request_backend(cluster, tmp_path):
    body = {
        "type": "backend",
        "bucket": cluster.link("data"),
        "prefix": "val/",
        "synchronize": True,
        "description": "validation set",
    }
    job = Job.from_request(body, tmp_path)
    assert job.description == "validation set"
    assert job.start().wait(60).finished == 1
    assert files(tmp_path) == ["val/00.tgz"]
    with pytest.raises(InvalidInputError, match="missing 'bucket'"):
        Job.from_request({"type": "backend"}, tmp_path)
    with pytest.raises(InvalidInputError, match="provider 'azure'"):
        Job.from_request(
            {"type": "backend", "bucket": {"name": "b", "provider": "azure"}}, tmp_path
        )


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("https://host/bucket/", "not a bucket link"),
        ("ais://127.0.0.1:1/", "names no bucket"),
    ],
)
def test_bad_bucket_links(tmp_path, uri, error):
    with pytest.raises(InvalidInputError, match=error):
        Job.backend(uri, tmp_path)


def test_sync_never_deletes_through_a_folder_replaced_by_a_link(cluster, tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    Job.backend(cluster.link("data"), dest).start().wait(60)
    outside.mkdir()
    (dest / "val").rename(outside / "val")  # same files, same sizes and times, now outside
    (dest / "val").symlink_to(outside / "val", target_is_directory=True)
    before = (outside / "val" / "00.tgz").read_bytes()
    cluster.delete("data", "val/00.tgz")
    status = Job.backend(cluster.link("data"), dest, prefix="val/", sync=True).start().wait(60)
    assert status.deleted == 0
    assert (outside / "val" / "00.tgz").read_bytes() == before  # nothing deleted outside
