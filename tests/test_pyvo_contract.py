"""pyvo's contract for ``http_download`` and ``aws_download`` (issue 11, items 1-4).

The HTTP server here sends only ``Content-Length``: no ETag, no Last-Modified, as many
data services do. dlutils' manifest must never make caching weaker than pyvo's size rule.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import pytest
from servers_s3 import (  # noqa: F401 - fixtures
    TEST_PROFILE,
    moto_server_fixture,
    s3_fixture,
    s3_module_fixture,
)

from dlutils import CacheMismatchWarning, http_download
from dlutils.freshness import Manifest, ObjectAttrs
from dlutils.sources import aws
from dlutils.sources.aws import aws_download

PYVO_WRONG_SIZE = "Found cached file but it has the wrong size. Overwriting ..."


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def bare_server(http_server):
    """The local server with its validators off: only Content-Length is sent."""
    http_server.send_etag = http_server.send_last_modified = False
    return http_server


def gets(server, path):
    return [r for r in server.requests_for(path) if r.method == "GET"]


# ------------------------------------------------------------------- 1. cache=True, size only


def test_a_second_call_reuses_the_file_when_only_content_length_is_sent(
    bare_server, tmp_path, capsys
):
    data = os.urandom(3000)
    bare_server.put("table.fits", data)
    url = bare_server.url_for("table.fits")
    path = http_download(url, tmp_path)
    assert sha256(path) == hashlib.sha256(data).hexdigest()
    mtime = os.stat(path).st_mtime_ns
    assert http_download(url, tmp_path, cache=True, verbose=True) == path
    assert f"Found cached file {path}." in capsys.readouterr().out
    assert os.stat(path).st_mtime_ns == mtime  # not placed again
    assert sha256(path) == hashlib.sha256(data).hexdigest()


def test_size_only_still_replaces_a_file_of_another_size(bare_server, tmp_path):
    bare_server.put("a.bin", b"first")
    url = bare_server.url_for("a.bin")
    path = http_download(url, tmp_path)
    bare_server.put("a.bin", b"the second version")
    assert http_download(url, tmp_path) == path
    assert open(path, "rb").read() == b"the second version"


def test_a_record_with_an_etag_still_catches_a_change(http_server, tmp_path):
    http_server.put("a.bin", b"12345")
    url = http_server.url_for("a.bin")
    path = http_download(url, tmp_path)
    http_server.put("a.bin", b"abcde")  # same size, new ETag
    http_download(url, tmp_path)
    assert open(path, "rb").read() == b"abcde"


def test_a_record_richer_than_the_response_falls_back_to_the_size(bare_server, tmp_path):
    bare_server.put("a.bin", b"12345")
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    with Manifest(tmp_path) as manifest:  # recorded while the server still sent an ETag
        manifest.put(path, ObjectAttrs(size=5, etag='"v1"', source=bare_server.url_for("a.bin")))
    mtime = os.stat(path).st_mtime_ns
    http_download(bare_server.url_for("a.bin"), tmp_path)
    assert os.stat(path).st_mtime_ns == mtime and path.read_bytes() == b"12345"


# ------------------------------------------------------------------- 3. zero-length body


def test_verbose_warns_about_a_zero_length_body_as_pyvo_does(bare_server, tmp_path):
    bare_server.put("empty.txt", b"")
    url = bare_server.url_for("empty.txt")
    with pytest.warns(UserWarning, match=r"^URL .*empty\.txt has length=0$"):
        path = http_download(url, tmp_path / "empty.txt", cache=False, verbose=True)
    assert open(path, "rb").read() == b""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        http_download(url, tmp_path / "quiet.txt", cache=False)  # not verbose: no warning


# ------------------------------------------------------------------- 4. pyvo's words


def test_the_wrong_size_warning_starts_with_pyvos_words(bare_server, tmp_path):
    bare_server.put("a.bin", b"the real content")
    (tmp_path / "a.bin").write_bytes(b"stale")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a filter written for pyvo's message silences ours
        warnings.filterwarnings("ignore", message=PYVO_WRONG_SIZE.replace(".", r"\."))
        path = http_download(bare_server.url_for("a.bin"), tmp_path / "a.bin")
    assert open(path, "rb").read() == b"the real content"
    (tmp_path / "a.bin").write_bytes(b"stale")
    with pytest.warns(CacheMismatchWarning) as caught:
        http_download(bare_server.url_for("a.bin"), tmp_path / "a.bin")
    assert str(caught[0].message).startswith(PYVO_WRONG_SIZE)


# ------------------------------------------------------------------- 2. aws_download


@pytest.fixture
def fresh_clients(monkeypatch):
    monkeypatch.setattr(aws, "_CLIENTS", aws._Clients())


def test_aws_download_does_not_cache_by_default(s3, tmp_path):
    s3.put("k/a.bin", b"remote bytes")
    (tmp_path / "a.bin").write_bytes(b"local bytes!")  # same size: pyvo's cache would keep it
    path = aws_download(s3.uri("k/a.bin"), local_filepath=tmp_path / "a.bin")
    assert open(path, "rb").read() == b"remote bytes"


def test_aws_download_ignores_bucket_and_key_when_uri_is_given(s3, tmp_path):
    s3.put("k/a.bin", b"from the uri")
    path = aws_download(
        s3.uri("k/a.bin"), bucket_name="elsewhere", key="other/key.bin", local_filepath=tmp_path
    )
    assert os.path.basename(path) == "a.bin"
    assert open(path, "rb").read() == b"from the uri"


def test_aws_download_verbose_says_which_access_worked(s3, tmp_path, capsys, fresh_clients):
    s3.put("k/a.bin", b"abc")
    aws_download(s3.uri("k/a.bin"), local_filepath=tmp_path / "1.bin", verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"bucket: {s3.name}, key: k/a.bin"
    # moto refuses unsigned requests: anonymous fails, then the credentials work
    assert out[1].startswith("Anonymous access: False. Message: ") and "403" in out[1]
    assert out[2] == "Access with system credentials: True. Message: None"
    aws_download(
        s3.uri("k/a.bin"), local_filepath=tmp_path / "2.bin", aws_profile=TEST_PROFILE, verbose=True
    )
    assert f"Access with profile ({TEST_PROFILE}): True. Message: None" in capsys.readouterr().out
    assert sha256(tmp_path / "2.bin") == hashlib.sha256(b"abc").hexdigest()
