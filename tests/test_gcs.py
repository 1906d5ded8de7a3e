"""gcs_download, fetch_gcs and list_gcs against gcp-storage-emulator and a paginating fake GCS."""

from __future__ import annotations

import logging
import os
import sys
import threading
import types

import pytest
import requests
from conftest import list_files as files_in
from conftest import make_random_bytes
from servers_gcs import (  # noqa: F401 - fixtures
    FakeGcs,
    Recorder,
    fake_gcs_fixture,
    gcs_bucket_fixture,
    gcs_emulator_fixture,
    gcs_env_fixture,
    upload,
)

from dlutils import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    DownloadAborted,
    InvalidInputError,
    RemoteChangedError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from dlutils.checksums import b64_to_hex
from dlutils.freshness import Manifest
from dlutils.sources import gcs
from dlutils.sources.gcs import fetch_gcs, gcs_download, list_gcs
from dlutils.transfer import TransferOptions

MiB = 1 << 20
SECRET = "ya29.secret-token-never-shown"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No test sees credentials another test loaded; google-auth is absent unless faked;
    the current folder is the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gcs, "_ADC", gcs._Adc())
    monkeypatch.setitem(sys.modules, "google.auth", None)


def fake_google_auth(monkeypatch, token):
    """Install a stand-in google-auth whose application default credentials hold ``token``."""
    calls = []

    class Credentials:
        token = None
        valid = False

        def refresh(self, request):
            calls.append("refresh")
            self.token, self.valid = token, True

    def default(scopes=None):
        calls.append(("default", tuple(scopes)))
        return Credentials(), "project"

    google = types.ModuleType("google")
    auth = types.ModuleType("google.auth")
    transport = types.ModuleType("google.auth.transport")
    transport_requests = types.ModuleType("google.auth.transport.requests")
    transport_requests.Request = object
    google.__path__, transport.__path__ = [], []
    google.auth, auth.default, auth.transport = auth, default, transport
    transport.requests = transport_requests
    for module in (google, auth, transport, transport_requests):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return calls


# --------------------------------------------------------------------------- arguments


def test_neither_uri_nor_bucket_and_key_names_what_was_given():
    with pytest.raises(InvalidInputError, match=r"got uri=None, bucket_name='b', key=None"):
        gcs_download(bucket_name="b")


def test_uri_with_bucket_or_key_is_refused_not_ignored(tmp_path):
    with pytest.raises(InvalidInputError, match="not both.*local_filepath="):
        gcs_download("gs://bucket/key.bin", "out.bin")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    "uri, error, message",
    [
        ("gs://bucket/dir/", InvalidInputError, "names a folder"),
        ("gs://bucket", InvalidInputError, "names a folder"),
        ("gs:///key", InvalidInputError, "names no bucket"),
        ("s3://bucket/key", UnsupportedSchemeError, "not a gs:// link"),
    ],
)
def test_malformed_uri_fails_before_any_request(uri, error, message, tmp_path):
    with pytest.raises(error, match=message):
        gcs_download(uri, local_filepath=tmp_path / "x")
    assert files_in(tmp_path) == []


def test_listing_checks_its_arguments_at_once():
    with pytest.raises(UnsupportedSchemeError):
        list_gcs("https://bucket/")
    with pytest.raises(InvalidInputError, match="must be strings"):
        list_gcs("gs://bucket/", prefix=None)


# --------------------------------------------------------------------------- emulator


def test_by_uri_to_a_path_returns_it_as_given(gcs_env, gcs_bucket, tmp_path):
    data = make_random_bytes(5000, seed=1)
    upload(gcs_env, gcs_bucket, "dir/data.bin", data)
    target = tmp_path / "sub" / "out.bin"
    assert gcs_download(f"gs://{gcs_bucket}/dir/data.bin", local_filepath=target) == os.fspath(
        target
    )
    assert target.read_bytes() == data
    assert files_in(tmp_path) == ["sub/out.bin"]


def test_by_bucket_and_key_to_the_current_folder(gcs_env, gcs_bucket, tmp_path, monkeypatch):
    upload(gcs_env, gcs_bucket, "tables/my table.csv", b"a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    assert gcs_download(bucket_name=gcs_bucket, key="tables/my table.csv") == "my table.csv"
    assert (tmp_path / "my table.csv").read_bytes() == b"a,b\n1,2\n"


def test_a_folder_means_the_key_base_name_inside_it(gcs_env, gcs_bucket, tmp_path):
    upload(gcs_env, gcs_bucket, "a/b/c.txt", b"c")
    path = gcs_download(f"gs://{gcs_bucket}/a/b/c.txt", local_filepath=tmp_path)
    assert path == os.path.join(tmp_path, "c.txt")
    assert files_in(tmp_path) == ["c.txt"]


def test_cache_hit_makes_no_media_request(gcs_env, gcs_bucket, tmp_path, capsys):
    upload(gcs_env, gcs_bucket, "k.bin", b"cached bytes")
    target = os.fspath(tmp_path / "k.bin")
    gcs_download(f"gs://{gcs_bucket}/k.bin", local_filepath=target)
    session = Recorder()
    result = fetch_gcs(
        f"gs://{gcs_bucket}/k.bin", target, TransferOptions(session=session, verbose=True)
    )
    assert result.skipped and result.received == 0
    assert session.media() == [] and len(session.sent) == 1  # the metadata only
    assert capsys.readouterr().out.strip() == f"Found cached file {target}."


def test_wrong_size_without_record_warns_and_replaces(gcs_env, gcs_bucket, tmp_path):
    upload(gcs_env, gcs_bucket, "k.bin", b"the real content")
    target = tmp_path / "k.bin"
    target.write_bytes(b"old")
    with pytest.warns(CacheMismatchWarning, match="wrong size"):
        gcs_download(f"gs://{gcs_bucket}/k.bin", local_filepath=target)
    assert target.read_bytes() == b"the real content"


def test_same_size_without_record_is_kept_as_pyvo_does(gcs_env, gcs_bucket, tmp_path):
    upload(gcs_env, gcs_bucket, "k.bin", b"remote")
    target = tmp_path / "k.bin"
    target.write_bytes(b"local!")
    session = Recorder()
    assert fetch_gcs(f"gs://{gcs_bucket}/k.bin", target, TransferOptions(session=session)).skipped
    assert session.media() == []


def test_missing_object_raises_http_error_404(gcs_env, gcs_bucket, tmp_path):
    with pytest.raises(requests.HTTPError) as caught:
        gcs_download(f"gs://{gcs_bucket}/nope.bin", local_filepath=tmp_path / "nope.bin")
    assert caught.value.response.status_code == 404
    assert files_in(tmp_path) == []


def test_new_generation_is_fetched_again_and_unchanged_one_skipped(gcs_env, gcs_bucket, tmp_path):
    uri, target = f"gs://{gcs_bucket}/v.bin", tmp_path / "v.bin"
    first = upload(gcs_env, gcs_bucket, "v.bin", b"version 1")
    assert not fetch_gcs(uri, target).skipped
    with Manifest(tmp_path) as manifest:
        record = manifest.get(target)
    assert record.version == first["generation"] and record.source == uri
    assert record.md5 == b64_to_hex(first["md5Hash"])
    assert record.crc32c == b64_to_hex(first["crc32c"])

    session = Recorder()
    assert fetch_gcs(uri, target, TransferOptions(session=session)).skipped
    assert session.media() == []

    upload(gcs_env, gcs_bucket, "v.bin", b"version 2")  # same size: the generation decides
    again = fetch_gcs(uri, target, TransferOptions(session=session))
    assert not again.skipped and again.received == 9
    assert target.read_bytes() == b"version 2"


def test_large_object_comes_in_ranges_pinned_to_its_generation(gcs_env, gcs_bucket, tmp_path):
    data = make_random_bytes(6 * MiB, seed=7)
    generation = upload(gcs_env, gcs_bucket, "big.bin", data)["generation"]
    session = Recorder()
    result = fetch_gcs(
        f"gs://{gcs_bucket}/big.bin",
        tmp_path / "big.bin",
        TransferOptions(session=session, segment_threshold=MiB),
    )
    ranged = [r for r in session.media() if "Range" in r.headers]
    assert len(ranged) >= 3
    assert all(f"ifGenerationMatch={generation}" in r.url for r in session.media())
    assert result.received == len(data)
    assert (tmp_path / "big.bin").read_bytes() == data


class StopAfter:
    """A limiter that lets ``chunks`` chunks through, then aborts the download."""

    def __init__(self, chunks):
        self.chunks = chunks

    def acquire(self, nbytes, abort=None):
        self.chunks -= 1
        if self.chunks < 0:
            abort.set()
            raise DownloadAborted("stopped by the test")
        return 0.0


@pytest.mark.parametrize("replaced", [False, True])
def test_partial_download_resumes_only_on_the_same_generation(
    gcs_env, gcs_bucket, tmp_path, replaced
):
    old, new = make_random_bytes(3 * MiB, seed=5), make_random_bytes(3 * MiB, seed=6)
    upload(gcs_env, gcs_bucket, "r.bin", old)
    uri, target = f"gs://{gcs_bucket}/r.bin", tmp_path / "r.bin"
    with pytest.raises(DownloadAborted):
        fetch_gcs(uri, target, TransferOptions(limiter=StopAfter(2), abort=threading.Event()))
    kept = os.path.getsize(f"{target}.part")
    assert 0 < kept < len(old) and not target.exists()
    if replaced:
        upload(gcs_env, gcs_bucket, "r.bin", new)
    session = Recorder()
    fetched = fetch_gcs(uri, target, TransferOptions(session=session))
    (media,) = session.media()
    if replaced:  # the part belongs to the old generation: started again from zero
        assert "Range" not in media.headers and fetched.received == len(new)
        assert target.read_bytes() == new
    else:
        assert media.headers["Range"] == f"bytes={kept}-"
        assert fetched.received == len(old) - kept
        assert target.read_bytes() == old


def test_listing_attrs_skip_unchanged_objects_with_no_request(gcs_env, gcs_bucket, tmp_path):
    for i in range(3):
        upload(gcs_env, gcs_bucket, f"set/{i}.bin", bytes([i]) * (100 + i))
    listed = list(list_gcs(f"gs://{gcs_bucket}/set/"))
    session = Recorder()
    for name, attrs in listed:
        path = tmp_path / os.path.basename(name)
        fetched = fetch_gcs(
            f"gs://{gcs_bucket}/{name}", path, TransferOptions(session=session, remote_attrs=attrs)
        )
        assert not fetched.skipped
    assert len(session.sent) == 3 and len(session.media()) == 3  # no metadata request

    session = Recorder()
    for name, attrs in list_gcs(f"gs://{gcs_bucket}/set/"):
        path = tmp_path / os.path.basename(name)
        assert fetch_gcs(
            f"gs://{gcs_bucket}/{name}", path, TransferOptions(session=session, remote_attrs=attrs)
        )
    assert session.sent == []
    assert files_in(tmp_path) == ["0.bin", "1.bin", "2.bin"]


def test_listing_prefix_and_suffix(gcs_env, gcs_bucket):
    for name in ["data/a.csv", "data/b.txt", "data/sub/c.csv", "other/d.csv"]:
        upload(gcs_env, gcs_bucket, name, name.encode())
    names = [name for name, _ in list_gcs(f"gs://{gcs_bucket}/data", suffix=".csv")]
    assert names == ["data/a.csv", "data/sub/c.csv"]
    listed = dict(list_gcs(f"gs://{gcs_bucket}/data/", prefix="sub/"))
    assert list(listed) == ["data/sub/c.csv"]
    attrs = listed["data/sub/c.csv"]
    assert attrs.size == len(b"data/sub/c.csv") and attrs.version and attrs.md5 and attrs.crc32c
    assert attrs.source == f"gs://{gcs_bucket}/data/sub/c.csv"
    assert attrs.last_modified.endswith(" GMT")
    assert len(list(list_gcs(f"gs://{gcs_bucket}"))) == 4


def test_token_is_sent_as_bearer_and_never_shown(gcs_env, gcs_bucket, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    upload(gcs_env, gcs_bucket, "t.bin", b"token")
    session = Recorder()
    gcs_download(
        f"gs://{gcs_bucket}/t.bin", local_filepath=tmp_path / "t.bin", session=session, token=SECRET
    )
    assert session.sent and all(
        r.headers["Authorization"] == f"Bearer {SECRET}" for r in session.sent
    )
    with pytest.raises(requests.HTTPError) as caught:
        gcs_download(
            f"gs://{gcs_bucket}/missing.bin", local_filepath=tmp_path / "m.bin", token=SECRET
        )
    assert caught.value.response.status_code == 404
    assert SECRET not in str(caught.value) and SECRET not in caplog.text


# --------------------------------------------------------------------------- fake GCS


def test_listing_follows_every_page_as_it_is_consumed(fake_gcs: FakeGcs):
    names = [f"shard-{i:02d}.tar" for i in range(7)]
    for name in names:
        fake_gcs.put(name, name.encode())
    listing = list_gcs(fake_gcs.uri())
    assert next(listing)[0] == names[0]
    assert len(fake_gcs.listings()) == 1  # streamed: the next page is not asked for yet
    assert [names[0]] + [name for name, _ in listing] == names
    tokens = [q.get("pageToken", [None])[0] for q in fake_gcs.listings()]
    assert tokens == [None, "2", "4", "6"]


def test_listing_pages_keep_prefix_suffix_and_skip_folder_placeholders(fake_gcs: FakeGcs):
    fake_gcs.put("train/", b"")
    fake_gcs.put("train/sub.tar/", b"")
    for i in range(5):
        fake_gcs.put(f"train/{i}.tar", b"t")
        fake_gcs.put(f"train/{i}.json", b"j")
        fake_gcs.put(f"test/{i}.tar", b"x")
    names = [name for name, _ in list_gcs(fake_gcs.uri("train/"), suffix=".tar")]
    assert names == [f"train/{i}.tar" for i in range(5)]
    assert len(fake_gcs.listings()) == 6
    assert {q["prefix"][0] for q in fake_gcs.listings()} == {"train/"}


@pytest.mark.parametrize("md5, algorithm", [(False, "crc32c"), (True, "md5")])
def test_corrupted_body_is_rejected_by_the_metadata_checksum(fake_gcs, tmp_path, md5, algorithm):
    good = make_random_bytes(4096, seed=3)
    bad = good[:100] + bytes([good[100] ^ 1]) + good[101:]
    fake_gcs.put("c.bin", good, md5=md5, served=bad)
    with pytest.raises(ChecksumMismatchError) as caught:
        gcs_download(fake_gcs.uri("c.bin"), local_filepath=tmp_path / "c.bin", retries=0)
    assert caught.value.algorithm == algorithm
    assert os.listdir(tmp_path) == []  # neither the file nor its .part


def test_stale_listing_generation_is_looked_up_again(fake_gcs: FakeGcs, tmp_path):
    fake_gcs.put("s.bin", b"old")
    (_, attrs), *_ = list_gcs(fake_gcs.uri())
    fake_gcs.put("s.bin", b"new content")
    fetched = fetch_gcs(
        fake_gcs.uri("s.bin"), tmp_path / "s.bin", TransferOptions(remote_attrs=attrs)
    )
    assert (tmp_path / "s.bin").read_bytes() == b"new content" and not fetched.skipped
    calls = [(q.get("alt"), q.get("ifGenerationMatch")) for _, q, _ in fake_gcs.seen[1:]]
    new = str(fake_gcs.objects["s.bin"].generation)
    assert calls == [(["media"], [attrs.version]), (None, None), (["media"], [new])]


def test_object_replaced_again_and_again_raises_remote_changed(fake_gcs: FakeGcs, tmp_path):
    fake_gcs.put("r.bin", b"moving")
    fake_gcs.churn = True
    with pytest.raises(RemoteChangedError, match="replaced 3 times"):
        gcs_download(fake_gcs.uri("r.bin"), local_filepath=tmp_path / "r.bin", sleep=lambda s: None)
    assert os.listdir(tmp_path) == []


def test_traversal_name_is_refused_and_nothing_written_outside(fake_gcs, tmp_path, monkeypatch):
    fake_gcs.put("../evil.txt", b"evil")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert [name for name, _ in list_gcs(fake_gcs.uri())] == ["../evil.txt"]
    before = len(fake_gcs.seen)
    with pytest.raises(UnsafePathError, match=r"'\.\./evil\.txt' is not safe"):
        gcs_download(fake_gcs.uri("../evil.txt"), local_filepath=dest)
    monkeypatch.chdir(dest)
    with pytest.raises(UnsafePathError):
        gcs_download(bucket_name=fake_gcs.bucket, key="../evil.txt")
    assert len(fake_gcs.seen) == before  # refused before any request
    assert files_in(tmp_path) == []


def test_private_bucket_without_credentials_says_what_to_do(fake_gcs: FakeGcs, tmp_path):
    fake_gcs.token = "server-side"
    fake_gcs.put("p.bin", b"private")
    with pytest.raises(requests.HTTPError, match="token=.*application default credentials") as e:
        gcs_download(fake_gcs.uri("p.bin"), local_filepath=tmp_path / "p.bin")
    assert e.value.response.status_code == 401
    assert "google-auth is not installed" in str(e.value)
    assert files_in(tmp_path) == []


def test_private_bucket_falls_back_to_application_default_credentials(
    fake_gcs: FakeGcs, tmp_path, monkeypatch
):
    calls = fake_google_auth(monkeypatch, "adc-token")
    fake_gcs.token = "adc-token"
    fake_gcs.put("p.bin", b"private")
    fake_gcs.put("q.bin", b"private too")
    assert gcs_download(fake_gcs.uri("p.bin"), local_filepath=tmp_path / "p.bin")
    auth = [headers.get("Authorization") for _, _, headers in fake_gcs.seen]
    assert auth == [None, "Bearer adc-token", "Bearer adc-token"]  # anonymous, then ADC
    assert calls == [("default", (gcs.READ_ONLY_SCOPE,)), "refresh"]

    del fake_gcs.seen[:]
    gcs_download(
        fake_gcs.uri("q.bin"), local_filepath=tmp_path / "q.bin"
    )  # known private: ADC at once
    assert [h.get("Authorization") for _, _, h in fake_gcs.seen] == ["Bearer adc-token"] * 2
    assert (tmp_path / "q.bin").read_bytes() == b"private too"


def test_a_refused_token_is_not_replaced_nor_shown(fake_gcs: FakeGcs, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    fake_gcs.token = "the-right-one"
    fake_gcs.put("p.bin", b"private")
    with pytest.raises(requests.HTTPError) as caught:
        gcs_download(fake_gcs.uri("p.bin"), local_filepath=tmp_path / "p.bin", token=SECRET)
    assert caught.value.response.status_code == 401
    assert "anonymous" not in str(caught.value)  # no fallback when a token was given
    assert SECRET not in str(caught.value) and SECRET not in caplog.text
    assert len(fake_gcs.seen) == 1


def test_extra_headers_go_with_every_request(fake_gcs: FakeGcs, tmp_path):
    fake_gcs.put("h.bin", b"headers")
    fetch_gcs(fake_gcs.uri("h.bin"), tmp_path / "h.bin", TransferOptions(headers={"X-Trace": "42"}))
    assert len(fake_gcs.seen) == 2  # metadata, media
    assert all(headers.get("X-Trace") == "42" for _, _, headers in fake_gcs.seen)


def test_a_given_checksum_holds_for_a_same_size_file_already_there(gcs_env, gcs_bucket, tmp_path):
    import hashlib

    upload(gcs_env, gcs_bucket, "k.bin", b"remote")
    target = tmp_path / "k.bin"
    target.write_bytes(b"local!")  # same size, no record: pyvo would keep it
    digest = "sha256:" + hashlib.sha256(b"remote").hexdigest()
    with pytest.warns(CacheMismatchWarning, match="sha256"):
        gcs_download(f"gs://{gcs_bucket}/k.bin", local_filepath=target, checksum=digest)
    assert target.read_bytes() == b"remote"
