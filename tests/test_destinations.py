"""One rule for a destination: a Path is a file unless it is a folder; no silent overwrite."""

from __future__ import annotations

import hashlib
import pathlib
import warnings

import pytest

from dlutils import CacheMismatchWarning, download, http_download


def sha256(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_a_path_that_does_not_exist_is_a_file_and_another_link_never_replaces_it_silently(
    http_server, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    # the same size, so that pyvo's size rule alone would keep the first file
    http_server.put("a/x.csv", b"1,2,3\n")
    http_server.put("b/y.csv", b"4,5,6\n")
    assert http_download(http_server.url_for("a/x.csv"), pathlib.Path("data")) == "data"
    assert sha256("data") == hashlib.sha256(b"1,2,3\n").hexdigest()
    with pytest.warns(CacheMismatchWarning, match=r"a/x\.csv, not from .*b/y\.csv"):
        path = http_download(http_server.url_for("b/y.csv"), pathlib.Path("data"))
    assert sha256(path) == hashlib.sha256(b"4,5,6\n").hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same link again: current, no warning
        assert http_download(http_server.url_for("b/y.csv"), pathlib.Path("data")) == "data"
    assert sha256("data") == hashlib.sha256(b"4,5,6\n").hexdigest()


def test_two_links_with_one_name_in_one_folder_warn(http_server, tmp_path):
    http_server.put("v1/notes.txt", b"first!")
    http_server.put("v2/notes.txt", b"second")
    first = http_download(http_server.url_for("v1/notes.txt"), f"{tmp_path}/")
    with pytest.warns(CacheMismatchWarning, match="v1/notes.txt, not from"):
        second = http_download(http_server.url_for("v2/notes.txt"), f"{tmp_path}/")
    assert first == second
    assert sha256(second) == hashlib.sha256(b"second").hexdigest()


def test_an_existing_folder_given_as_a_path_is_a_folder_and_dest_always_is(http_server, tmp_path):
    http_server.put("d/table.csv", b"t")
    (tmp_path / "existing").mkdir()
    path = http_download(http_server.url_for("d/table.csv"), tmp_path / "existing")
    assert pathlib.Path(path) == tmp_path / "existing" / "table.csv"
    job = download(http_server.url_for("d/table.csv"), tmp_path / "absent")
    assert job.wait(60).finished == 1
    assert sha256(tmp_path / "absent" / "table.csv") == hashlib.sha256(b"t").hexdigest()
