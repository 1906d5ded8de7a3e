"""Nothing outside the destination, nothing clobbered (issue 10, items 10-12).

Links planted where dlutils keeps its working files (``NAME.part``, the manifest and its
journals, the job store, a worker's log) are refused and never written through; object
names that would reach those files are errors of those objects only; a name too long
for the filesystem is an error of that object only, and the job goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3

import pytest
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401 - fixtures

import dlutils
from dlutils import Job, State, UnsafePathError, http_download
from dlutils.freshness import Manifest, ObjectAttrs
from dlutils.jobstore import JobStore
from dlutils.names import (
    BACKSLASH_SEPARATES,
    NAME_MAX,
    PART_SUFFIX,
    WORKING_PREFIX,
    check_name,
    join_inside,
)
from dlutils.sandbox.hf_hub import HubStandIn
from dlutils.sources.http import HttpRemote
from dlutils.transfer import PART_SUFFIX as TRANSFER_PART_SUFFIX
from dlutils.transfer import download

MANIFEST = Manifest.FILENAME
PRECIOUS = b"precious bytes that are not dlutils' to touch\n" * 100


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def finished(job: Job) -> dlutils.JobStatus:
    status = job.wait(60)
    assert status.state is State.FINISHED, status
    return status


@pytest.fixture
def outside(tmp_path):
    """A file outside every destination of the test, with bytes that must stay as they are."""
    path = tmp_path / "outside" / "precious.bin"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    return path


def plant(kind: str, at, outside) -> None:
    """A symbolic link, a dangling one (to a file that does not exist yet) or a hard link."""
    if kind == "symlink":
        os.symlink(outside, at)
    elif kind == "dangling symlink":
        os.symlink(outside.parent / "created-through-the-link", at)
    else:
        os.link(outside, at)


def untouched(outside) -> bool:
    created = outside.parent / "created-through-the-link"
    return sha256(outside) == hashlib.sha256(PRECIOUS).hexdigest() and not created.exists()


# --------------------------------------------------------------------------- item 10: .part


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link"])
def test_a_link_planted_at_the_part_file_is_refused_and_nothing_goes_through_it(
    kind, http_server, tmp_path, outside
):
    http_server.put("a.bin", b"server bytes" * 1000)
    dest = tmp_path / "dest"
    dest.mkdir()
    plant(kind, dest / "a.bin.part", outside)
    reason = "hard links" if kind == "hard link" else "is a symbolic link"
    with pytest.raises(UnsafePathError, match=rf"a\.bin\.part' (has 2 )?{reason}.*remove"):
        http_download(http_server.url_for("a.bin"), dest)
    assert untouched(outside)
    assert not (dest / "a.bin").exists()  # nothing placed, the final name is not the link
    assert os.path.lexists(dest / "a.bin.part")  # left for the user to look at


def test_a_link_at_one_part_file_of_a_job_is_an_error_of_that_object_only(
    http_server, tmp_path, outside
):
    data = {f"f{i}.bin": bytes([i]) * 5000 for i in range(3)}
    for name, body in data.items():
        http_server.put(name, body)
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "f1.bin.part")
    status = finished(Job.range(http_server.url + "/f{0..2}.bin", dest).start())
    assert (status.total, status.finished, status.errors) == (3, 2, 1)
    [(name, error)] = status.download_errors
    assert name == "f1.bin" and "UnsafePathError" in error and "symbolic link" in error
    assert untouched(outside)
    for name in ("f0.bin", "f2.bin"):
        assert sha256(dest / name) == hashlib.sha256(data[name]).hexdigest()


def test_a_part_file_swapped_during_the_download_is_never_placed(http_server, tmp_path):
    http_server.put("a.bin", b"server bytes" * 1000)
    target = tmp_path / "a.bin"
    intruder = b"another object's bytes"

    class Swapping(HttpRemote):
        """Replaces the .part under the engine's feet as the first bytes arrive."""

        def open(self, start=0, end=None, *, if_range=None, headers=None):
            body = super().open(start, end, if_range=if_range, headers=headers)

            def read(n, _read=body.read):
                if not (tmp_path / "swapped").exists():
                    (tmp_path / "swapped").write_bytes(intruder)
                    os.replace(tmp_path / "swapped", str(target) + PART_SUFFIX)
                return _read(n)

            return dataclasses.replace(body, read=read)

    with pytest.raises(dlutils.DownloadError, match=r"no longer the file dlutils wrote"):
        download(Swapping(http_server.url_for("a.bin")), target)
    assert not target.exists()  # the other file was not moved into place
    assert (tmp_path / "a.bin.part").read_bytes() == intruder  # nor touched


# --------------------------------------------------------------------------- item 10: SQLite


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_a_link_planted_at_the_manifest_or_its_journals_refuses_the_job(
    suffix, http_server, tmp_path, outside
):
    http_server.put("a.bin", b"a" * 100)
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / (MANIFEST + suffix))
    status = finished(Job.single(http_server.url_for("a.bin"), dest).start())
    assert (status.finished, status.errors) == (0, 1)
    [(where, error)] = status.download_errors
    assert where == "<manifest>"
    assert f"manifest '{dest / (MANIFEST + suffix)}' is a symbolic link" in error
    assert "remove" in error
    assert untouched(outside)
    assert http_server.requests_for("/a.bin") == []  # refused before anything was fetched


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link"])
def test_the_manifest_never_writes_through_a_planted_link(kind, tmp_path, outside):
    root = tmp_path / "dest"
    root.mkdir()
    (root / "data.bin").write_bytes(b"abc")
    plant(kind, root / (MANIFEST + "-wal"), outside)
    with Manifest(root) as manifest:
        with pytest.raises(UnsafePathError, match=r"-wal' (is a symbolic link|has 2 hard links)"):
            manifest.put("data.bin", ObjectAttrs(size=3))
    assert untouched(outside)
    os.unlink(root / (MANIFEST + "-wal"))
    plant(kind, root / MANIFEST, outside)
    with Manifest(root) as manifest:
        with pytest.raises(UnsafePathError, match=r"manifest '.*sqlite' .*remove"):
            manifest.put("data.bin", ObjectAttrs(size=3))
        with pytest.raises(UnsafePathError, match=r"manifest '.*sqlite' "):
            manifest.get("data.bin")
    assert untouched(outside)


def test_a_download_function_keeps_its_file_but_writes_no_record_through_a_link(
    http_server, tmp_path, outside
):
    http_server.put("a.bin", b"a" * 100)
    dest = tmp_path / "dest"
    dest.mkdir()
    plant("dangling symlink", dest / MANIFEST, outside)  # SQLite would create a database there
    path = http_download(http_server.url_for("a.bin"), dest)
    assert open(path, "rb").read() == b"a" * 100  # the download itself needs no record
    assert untouched(outside)


@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_a_link_planted_at_the_job_store_is_refused(suffix, tmp_path, outside):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(outside, home / (JobStore.FILENAME + suffix))
    with pytest.raises(UnsafePathError, match=r"job store '.*jobs\.sqlite.*' is a symbolic link"):
        JobStore(home)
    assert untouched(outside)


def test_a_link_planted_at_a_worker_log_is_refused(tmp_path, outside):
    with JobStore(tmp_path / "home") as store:
        os.makedirs(os.path.dirname(store.log_path("dnl-1")))
        os.symlink(outside, store.log_path("dnl-1"))
        with pytest.raises(UnsafePathError, match=r"job log .*dnl-1\.log' is a symbolic link"):
            store.open_log("dnl-1")
        with store.open_log("dnl-2") as log:
            log.write(b"started\n")
        assert open(store.log_path("dnl-2"), "rb").read() == b"started\n"
    assert untouched(outside)


# --------------------------------------------------------------------------- item 11


COLLIDING = {
    "a.bin": b"the bytes of a.bin" * 300,
    "a.bin.part": b"the bytes of a.bin.part" * 300,
    MANIFEST: b"an object that is not a database" * 300,
}


def assert_no_clobbering(status, dest) -> None:
    assert (status.finished, status.errors) == (1, 2)
    errors = dict(status.download_errors)
    assert sorted(errors) == sorted(["a.bin.part", MANIFEST])
    assert all(e.startswith("UnsafePathError") for e in errors.values())
    assert "ends with '.part'" in errors["a.bin.part"] and "another name" in errors["a.bin.part"]
    assert "'.dlutils-'" in errors[MANIFEST] and "another name" in errors[MANIFEST]
    assert sha256(dest / "a.bin") == hashlib.sha256(COLLIDING["a.bin"]).hexdigest()
    assert not (dest / "a.bin.part").exists()
    with sqlite3.connect(dest / MANIFEST) as db:  # still dlutils' manifest, and whole
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert Manifest(dest).get("a.bin").size == len(COLLIDING["a.bin"])


def test_objects_named_like_working_files_are_errors_and_clobber_nothing(http_server, tmp_path):
    for name, body in COLLIDING.items():
        http_server.put(f"d/{name}", body)
    links = [http_server.url_for(f"d/{name}") for name in COLLIDING]
    for _ in range(2):  # and again, now that a.bin and the manifest are there
        status = finished(Job.multi(links, tmp_path).start())
        assert_no_clobbering(status, tmp_path)
    assert [
        r.path for r in http_server.requests if "a.bin.part" in r.path or "sqlite" in r.path
    ] == []


def test_bucket_objects_named_like_working_files_are_errors_and_clobber_nothing(s3, tmp_path):
    for name, body in COLLIDING.items():
        s3.put(f"k/{name}", body)
    status = finished(Job.backend(s3.uri("k/"), tmp_path).start())
    assert status.total == 3
    assert_no_clobbering(status, tmp_path)


@pytest.mark.skipif(BACKSLASH_SEPARATES, reason="a backslash cannot be in a file name here")
def test_bucket_keys_differing_only_by_a_backslash_are_not_both_reported_finished(s3, tmp_path):
    first, second = b"first\n" * 100, b"second\n" * 99
    s3.put("k/a/b", first)
    s3.put("k/a\\b", second)
    status = Job.backend(s3.uri("k/"), tmp_path).start().wait(60)
    placed = {
        sha256(os.path.join(top, n))
        for top, _, names in os.walk(tmp_path)
        for n in names
        if n != MANIFEST
    }
    # Either both are kept (under two names), or the one that is not is reported as an error.
    kept = {hashlib.sha256(d).hexdigest() for d in (first, second)} & placed
    assert status.finished == len(kept), (status.finished, status.download_errors)
    # Here both are kept, each under its own key, as aws s3 sync keeps them.
    assert (tmp_path / "a" / "b").read_bytes() == first
    assert (tmp_path / "a\\b").read_bytes() == second
    # A sync after 'a\\b' is gone deletes that file, not the one under the folder 'a'.
    s3.client.delete_object(Bucket=s3.name, Key="k/a\\b")
    synced = Job.backend(s3.uri("k/"), tmp_path, sync=True).start().wait(60)
    assert (synced.errors, synced.skipped) == (0, 1), synced
    assert (tmp_path / "a" / "b").read_bytes() == first
    assert not (tmp_path / "a\\b").exists()


def test_a_working_file_name_chosen_by_the_caller_is_refused_with_the_way_out(
    http_server, tmp_path
):
    http_server.put("d/a.bin.part", COLLIDING["a.bin.part"])
    link = http_server.url_for("d/a.bin.part")
    with pytest.raises(UnsafePathError, match=r"'a\.bin\.part' is not safe.*another name"):
        Job.multi({"a.bin.part": link}, tmp_path)
    with pytest.raises(UnsafePathError, match=r"'a\.bin\.part' is not safe.*local_filepath="):
        http_download(link, tmp_path)
    status = finished(Job.multi({"a.bin.part-saved": link}, tmp_path).start())  # the way out
    assert status.finished == 1
    assert (tmp_path / "a.bin.part-saved").read_bytes() == COLLIDING["a.bin.part"]


@pytest.mark.parametrize(
    "name",
    [
        "a.part",
        "x/y.part",
        "a.part/b",
        "a.bin.PART",
        ".dlutils-manifest.sqlite",
        "sub/.dlutils-x",
        ".DLUTILS-MANIFEST.SQLITE",
    ],
)
def test_check_name_refuses_what_a_working_file_may_be_called(name):
    with pytest.raises(UnsafePathError, match=r"is not safe: .*('\.part'|'\.dlutils-')"):
        check_name(name)


@pytest.mark.parametrize("name", ["a.part1", "a.parts", "part", ".part-of-it", "x.dlutils-y"])
def test_check_name_keeps_names_that_only_look_alike(name):
    assert check_name(name) == name


def test_the_refused_names_are_those_dlutils_gives_its_files():
    assert PART_SUFFIX == TRANSFER_PART_SUFFIX
    assert Manifest.FILENAME.startswith(WORKING_PREFIX)


# --------------------------------------------------------------------------- item 12

LIMIT = NAME_MAX - len(PART_SUFFIX)  # 250: NAME.part must fit in 255 bytes too


def test_check_name_measures_each_element_in_utf8_bytes():
    assert check_name("x" * LIMIT) == "x" * LIMIT
    assert check_name("é" * (LIMIT // 2)) == "é" * (LIMIT // 2)
    assert check_name("d" * NAME_MAX + "/f") == "d" * NAME_MAX + "/f"
    with pytest.raises(
        UnsafePathError, match=r"file name 'xxx.*' is 251 bytes long .*more than 250"
    ):
        check_name("x" * (LIMIT + 1))
    with pytest.raises(UnsafePathError, match=r"is 252 bytes long in UTF-8"):
        check_name("é" * 126)
    with pytest.raises(UnsafePathError, match=r"a folder in it 'ddd.*' is 256 bytes"):
        check_name("d" * (NAME_MAX + 1) + "/f")
    with pytest.raises(UnsafePathError, match=r"more than a path can be"):
        check_name("/".join(["d" * 200] * 21))


def test_join_inside_refuses_a_path_longer_than_the_system_takes(tmp_path):
    deep = tmp_path / ("d" * 200)
    assert join_inside(deep, "a/" * 1000 + "b")  # 2001 bytes: fine
    with pytest.raises(UnsafePathError, match=r"more than the 4095 a path can be"):
        join_inside(deep, "/".join(["d" * 200] * 20) + "/f")  # alone: 4021 bytes


def test_names_too_long_in_a_range_template_fail_those_objects_only(http_server, tmp_path):
    stem = "é" * 124  # 248 bytes: 250 with two digits (fine), 259 with eleven (too long)
    template = stem + "{1..3}{9..1000000009..1000000000}"
    names = [f"{stem}{a}{b}" for a in (1, 2, 3) for b in (9, 1000000009)]
    for name in names:
        http_server.put(name, name.encode())
    status = finished(Job.range(http_server.url + "/" + template, tmp_path).start())
    assert (status.total, status.finished, status.errors) == (6, 3, 3)
    too_long = [name for name in names if name.endswith("1000000009")]
    assert sorted(name for name, _ in status.download_errors) == sorted(too_long)
    assert all("UnsafePathError" in e and "259 bytes" in e for _, e in status.download_errors)
    for name in names:
        if name not in too_long:
            assert (tmp_path / name).read_bytes() == name.encode()
    assert not any(name in r.path for r in http_server.requests for name in too_long)


def test_a_name_with_no_room_for_its_part_file_fails_that_object_only(http_server, tmp_path):
    names = ["a.bin", "x" * 250, "x" * 251]  # 251 bytes: the name fits, NAME.part would not
    for name in names:
        http_server.put(name, name.encode())
    status = finished(Job.multi([http_server.url_for(n) for n in names], tmp_path).start())
    assert (status.total, status.finished, status.errors) == (3, 2, 1)
    [(name, error)] = status.download_errors
    assert name == "x" * 251 and "UnsafePathError" in error and "'.part' must fit" in error
    assert (tmp_path / ("x" * 250)).read_bytes() == b"x" * 250


def test_a_name_too_long_in_a_list_of_links_fails_that_object_only(http_server, tmp_path):
    names = ["a.bin", "x" * 300, "z.bin"]
    for name in names:
        http_server.put(name, name.encode())
    status = finished(Job.multi([http_server.url_for(n) for n in names], tmp_path).start())
    assert (status.total, status.finished, status.errors) == (3, 2, 1)
    [(name, error)] = status.download_errors
    assert name == "x" * 300 and error.startswith("UnsafePathError") and "300 bytes" in error
    assert (tmp_path / "z.bin").read_bytes() == b"z.bin"


def test_a_key_too_long_in_an_s3_listing_fails_that_object_only(s3, tmp_path):
    keys = ["a.bin", "m" + "x" * 300, "z.bin"]  # listed in this order
    for key in keys:
        s3.put(key, key.encode())
    status = finished(Job.backend(s3.uri(), tmp_path).start())
    assert (status.total, status.finished, status.errors) == (3, 2, 1)
    [(name, error)] = status.download_errors
    assert name == keys[1] and error.startswith("UnsafePathError") and "301 bytes" in error
    assert sha256(tmp_path / "z.bin") == hashlib.sha256(b"z.bin").hexdigest()
    assert sha256(tmp_path / "a.bin") == hashlib.sha256(b"a.bin").hexdigest()


def test_hub_files_too_long_or_named_like_working_files_fail_those_files_only(
    monkeypatch, tmp_path
):
    repo = {
        "a.txt": b"a",
        "b/" + "x" * 300: b"long",
        "b/c.bin.part": b"part",
        "b/c.bin": b"the bytes of c.bin",
        "z.txt": b"z",
    }
    with HubStandIn(page_size=2) as hub:
        hub.add_repo("acme/hostile", repo)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        status = finished(Job.hf(tmp_path, dataset="acme/hostile").start())
        renamed = {"c.bin.part-renamed": "hf://datasets/acme/hostile/b/c.bin.part"}
        assert finished(Job.multi(renamed, tmp_path / "renamed").start()).finished == 1
    assert (tmp_path / "renamed" / "c.bin.part-renamed").read_bytes() == b"part"  # the way out
    assert (status.total, status.finished, status.errors) == (5, 3, 2)
    errors = dict(status.download_errors)
    assert sorted(errors) == sorted(["b/" + "x" * 300, "b/c.bin.part"])
    assert all(e.startswith("UnsafePathError") for e in errors.values())
    assert (tmp_path / "b" / "c.bin").read_bytes() == b"the bytes of c.bin"
    assert (tmp_path / "z.txt").read_bytes() == b"z"


def test_a_remote_path_is_checked_for_its_shape_only_when_saved_under_another_name():
    assert check_name("b/c.bin.part", local=False) == "b/c.bin.part"
    assert check_name("x" * 300, local=False) == "x" * 300
    with pytest.raises(UnsafePathError, match=r"'\.\.' segment"):
        check_name("../c.bin.part", local=False)
