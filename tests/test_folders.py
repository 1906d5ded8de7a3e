"""A job's folders: checked and created once each, checked again whenever they change.

A link planted in the destination after the job was made never leads an object out of
it; a folder removed mid-job is made again; a folder made once and then replaced is
checked again from the start.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from dlutils import Job, State, UnsafePathError, http_download
from dlutils.jobs.folders import Folders


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_link_planted_after_the_job_was_made_leads_nothing_out(http_server, tmp_path):
    for name in ("a.bin", "b.bin"):
        http_server.put(name, name.encode() * 10)
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    links = {f"sub/{n}": http_server.url_for(n) for n in ("a.bin", "b.bin")}
    job = Job.multi(links, dest, connections=1)  # the names are checked now...
    dest.mkdir()
    os.symlink(outside, dest / "sub")  # ...and a link leading out is planted before it runs
    status = job.start().wait(60)
    assert status.state is State.FINISHED
    assert status.errors == 2 and status.finished == 0
    assert all("outside the destination" in error for _, error in status.download_errors)
    assert os.listdir(outside) == []


def test_a_link_inside_the_destination_is_followed(http_server, tmp_path):
    http_server.put("a.bin", b"a" * 10)
    dest = tmp_path / "dest"
    job = Job.multi({"sub/a.bin": http_server.url_for("a.bin")}, dest, connections=1)
    (dest / "real").mkdir(parents=True)
    os.symlink(dest / "real", dest / "sub")
    status = job.start().wait(60)
    assert (status.finished, status.errors) == (1, 0)
    assert (dest / "real" / "a.bin").read_bytes() == b"a" * 10


def test_a_folder_made_once_then_replaced_by_a_link_out_is_refused(tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    folders = Folders(str(dest))
    folders.prepare("sub/a.bin", str(dest / "sub" / "a.bin"))
    assert (dest / "sub").is_dir()
    folders.prepare("sub/b.bin", str(dest / "sub" / "b.bin"))  # known: still fine
    shutil.rmtree(dest / "sub")
    os.symlink(outside, dest / "sub")
    with pytest.raises(UnsafePathError, match="outside the destination"):
        folders.prepare("sub/c.bin", str(dest / "sub" / "c.bin"))
    assert os.listdir(outside) == []


def test_a_link_planted_higher_up_is_noticed(tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    folders = Folders(str(dest))
    folders.prepare("a/b/x.bin", str(dest / "a" / "b" / "x.bin"))
    shutil.rmtree(dest / "a")
    os.symlink(outside, dest / "a")  # dest/a/b now resolves to outside/b
    with pytest.raises(UnsafePathError, match="outside the destination"):
        folders.prepare("a/b/y.bin", str(dest / "a" / "b" / "y.bin"))


def test_a_folder_removed_after_it_was_made_is_made_again(tmp_path):
    dest = tmp_path / "dest"
    folders = Folders(str(dest))
    folders.prepare("sub/a.bin", str(dest / "sub" / "a.bin"))
    shutil.rmtree(dest / "sub")
    folders.prepare("sub/b.bin", str(dest / "sub" / "b.bin"))
    assert (dest / "sub").is_dir()


def test_objects_directly_in_the_destination_need_no_folder(tmp_path):
    dest = tmp_path / "not-made"
    Folders(str(dest)).prepare("a.bin", str(dest / "a.bin"))
    assert not dest.exists()  # the engine makes it with the first file


def test_a_job_whose_folder_is_removed_midway_still_places_every_file(http_server, tmp_path):
    files = {f"f{i}.bin": bytes([i]) * 1000 for i in range(6)}
    for name, data in files.items():
        http_server.put(name, data)
    dest = tmp_path / "dest"
    first = Job.multi({f"sub/{n}": http_server.url_for(n) for n in files}, dest, connections=2)
    assert first.start().wait(60).finished == 6
    shutil.rmtree(dest / "sub")
    second = Job.multi({f"sub/{n}": http_server.url_for(n) for n in files}, dest, connections=2)
    status = second.start().wait(60)
    assert (status.finished, status.errors) == (6, 0)
    for name, data in files.items():
        assert sha256((dest / "sub" / name).read_bytes()) == sha256(data)


def test_the_engine_makes_a_missing_folder_only_when_it_needs_one(http_server, tmp_path):
    http_server.put("a.bin", b"x" * 100)
    target = tmp_path / "deep" / "er" / "a.bin"
    http_download(http_server.url_for("a.bin"), target)
    assert target.read_bytes() == b"x" * 100
    assert not [p for p in os.listdir(target.parent) if p.endswith(".part")]
