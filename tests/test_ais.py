"""The ais:// source against a local AIStore stand-in (gateway + target on 127.0.0.1)."""

from __future__ import annotations

import os
import warnings

import pytest
import requests
from conftest import list_files as files
from conftest import make_random_bytes

from dlutils import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    InvalidInputError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from dlutils.freshness import Manifest, ObjectAttrs
from dlutils.localserver import reset_after
from dlutils.sandbox.aistore import AisStandIn
from dlutils.sources.ais import ais_download, ais_url, fetch_ais, list_ais, parse_ais
from dlutils.templates import expand
from dlutils.transfer import TransferOptions

MiB = 1 << 20


@pytest.fixture
def ais():
    with AisStandIn(page_size=3) as cluster:
        yield cluster


def record(path):
    with Manifest(os.path.dirname(path)) as manifest:
        return manifest.get(path)


def methods(ais):
    return [r.method for r in ais.object_requests()]


# --------------------------------------------------------------------------- links


IMAGENET = ("http://10.0.0.5:8080", "imagenet", "train-0022.tgz")


@pytest.mark.parametrize(
    "link, expected",
    [
        ("ais://10.0.0.5:8080/imagenet/train-0022.tgz", IMAGENET),
        ("ais://10.0.0.5/imagenet/train-0022.tgz", IMAGENET),  # port 8080 when omitted
        ("AIS://gw:51080/b/train/2024/a b#1.tar", ("http://gw:51080", "b", "train/2024/a b#1.tar")),
        ("ais://[::1]:9000/b/x", ("http://[::1]:9000", "b", "x")),
    ],
)
def test_parse_ais(link, expected):
    assert parse_ais(link, endpoint="") == expected


def test_https_only_when_ais_endpoint_says_so_for_this_gateway(monkeypatch):
    monkeypatch.setenv("AIS_ENDPOINT", "https://gw.example:8080")
    assert parse_ais("ais://gw.example/b/o")[0] == "https://gw.example:8080"
    assert parse_ais("ais://gw.example:9090/b/o")[0] == "http://gw.example:9090"
    assert parse_ais("ais://other/b/o")[0] == "http://other:8080"
    assert parse_ais("ais://gw.example/b/o", endpoint="http://gw.example:8080")[0].startswith(
        "http:"
    )


@pytest.mark.parametrize(
    "link, message",
    [
        ("ais://10.0.0.5:8080/imagenet", "names no object"),
        ("ais://10.0.0.5:8080/imagenet/", "names no object"),
        ("ais://10.0.0.5:8080/imagenet/train/", "names a folder, not an object"),
        ("ais://10.0.0.5:8080", "names no bucket"),
        ("ais://10.0.0.5:8080//x.tgz", "names no bucket"),
        ("ais:///imagenet/x.tgz", "names no gateway host"),
        ("ais://user:pw@gw/imagenet/x.tgz", "credentials do not belong in it"),
        ("ais://gw:port/imagenet/x.tgz", "bad port"),
        ("", "is not valid"),
    ],
)
def test_bad_links_say_what_is_wrong_and_show_an_example(link, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        parse_ais(link)
    assert "ais://10.0.0.5:8080/imagenet/train-0022.tgz" in str(info.value)


def test_another_scheme_is_refused():
    with pytest.raises(UnsupportedSchemeError, match="is not an ais:// link"):
        parse_ais("s3://bucket/key")


def test_ais_url_encodes_each_segment():
    url = ais_url("ais://gw/data/dir 1/a%b?c.tgz", endpoint="")
    assert url == "http://gw:8080/v1/objects/data/dir%201/a%25b%3Fc.tgz?provider=ais"


# --------------------------------------------------------------------------- downloads


def test_download_to_a_path_and_to_a_folder(ais, tmp_path):
    data = make_random_bytes(50_000)
    ais.put("imagenet", "train/train-0022.tgz", data, checksum="md5")
    link = ais.link("imagenet", "train/train-0022.tgz")

    target = tmp_path / "sub" / "shard.tgz"
    assert ais_download(link, target) == os.fspath(target)
    assert target.read_bytes() == data

    path = ais_download(link, os.path.join(tmp_path, "folder", ""))
    assert path == os.path.join(tmp_path, "folder", "train-0022.tgz")
    assert open(path, "rb").read() == data
    # the gateway redirected both requests of each download to the target
    assert [r.method for r in ais.requests] == ["HEAD", "GET"] * 2
    assert methods(ais) == ["HEAD", "GET"] * 2


def test_name_comes_from_the_object_never_from_content_disposition(ais, tmp_path, monkeypatch):
    ais.put("b", "dir/real name.bin", b"abc")
    ais.target.content_disposition["v1/objects/b/dir/real name.bin"] = "evil.exe"
    assert fetch_ais(ais.link("b", "dir/real name.bin"), tmp_path).path.endswith("real name.bin")
    monkeypatch.chdir(tmp_path / "..")
    os.makedirs("here", exist_ok=True)
    monkeypatch.chdir("here")
    assert ais_download(ais.link("b", "dir/real name.bin")) == "real name.bin"
    assert files(tmp_path) == ["real name.bin"]


def test_the_record_names_the_ais_link_as_source(ais, tmp_path):
    ais.put("b", "a.bin", b"hello", checksum="crc32c")
    link = ais.link("b", "a.bin")
    path = ais_download(link, tmp_path)
    attrs = record(path)
    assert attrs.source == link
    assert (attrs.size, attrs.version, attrs.crc32c) == (5, "1", "9a71bb4c")
    assert attrs.etag.startswith('"v1-9a71bb4c-')


@pytest.mark.parametrize("kind", ["md5", "crc32c", "sha256", "sha512"])
def test_the_cluster_checksum_is_verified(ais, tmp_path, kind):
    data = make_random_bytes(20_000, seed=3)
    ais.put("b", "good.bin", data, checksum=kind)
    assert open(ais_download(ais.link("b", "good.bin"), tmp_path), "rb").read() == data

    wrong = {"md5": "0" * 32, "crc32c": "0" * 8, "sha256": "0" * 64, "sha512": "0" * 128}[kind]
    ais.put("b", "bad.bin", data, checksum=kind, value=wrong)
    with pytest.raises(ChecksumMismatchError):
        ais_download(ais.link("b", "bad.bin"), tmp_path)
    assert files(tmp_path) == ["good.bin"]  # nothing placed, no .part left


def test_xxhash_is_not_verifiable_and_is_ignored(ais, tmp_path):
    ais.put("b", "x.bin", b"data", checksum="xxhash", value="0123456789abcdef")  # wrong on purpose
    path = ais_download(ais.link("b", "x.bin"), tmp_path)
    assert open(path, "rb").read() == b"data"
    attrs = record(path)
    assert (attrs.md5, attrs.crc32c, attrs.sha256) == (None, None, None)


def test_a_current_file_costs_one_head_and_no_get(ais, tmp_path):
    ais.put("b", "a.bin", b"hello")
    link = ais.link("b", "a.bin")
    first = fetch_ais(link, tmp_path)
    ais.clear_logs()
    second = fetch_ais(link, tmp_path)
    assert (first.skipped, second.skipped) == (False, True)
    assert (second.path, second.size, second.received) == (first.path, 5, 0)
    assert methods(ais) == ["HEAD"]


def test_a_changed_object_is_fetched_again(ais, tmp_path):
    ais.put("b", "a.bin", b"version one")
    link = ais.link("b", "a.bin")
    path = ais_download(link, tmp_path)
    ais.put("b", "a.bin", b"version two")  # same size, new version and ETag
    ais.clear_logs()
    fetched = fetch_ais(link, tmp_path)
    assert not fetched.skipped and open(path, "rb").read() == b"version two"
    assert methods(ais) == ["HEAD", "GET"]
    assert record(path).version == "2"


def test_a_file_without_record_is_compared_by_size(ais, tmp_path):
    ais.put("b", "a.bin", b"12345")
    (tmp_path / "a.bin").write_bytes(b"54321")
    assert fetch_ais(ais.link("b", "a.bin"), tmp_path, TransferOptions(manifest=False)).skipped
    (tmp_path / "a.bin").write_bytes(b"123")
    with pytest.warns(CacheMismatchWarning, match="wrong size"):
        assert not fetch_ais(
            ais.link("b", "a.bin"), tmp_path, TransferOptions(manifest=False)
        ).skipped
    assert (tmp_path / "a.bin").read_bytes() == b"12345"


def test_a_same_size_file_without_record_is_kept_and_recorded(ais, tmp_path):
    # With a manifest (the default), a hit by size records the object, as pyvo-style caching
    # does for the other sources (this branch once called a shadowed name and crashed).
    ais.put("b", "a.bin", b"12345", checksum="md5")
    (tmp_path / "a.bin").write_bytes(b"54321")
    assert fetch_ais(ais.link("b", "a.bin"), tmp_path).skipped
    with Manifest(tmp_path) as manifest:
        assert manifest.get(tmp_path / "a.bin").source == ais.link("b", "a.bin")


def test_missing_object_raises_http_error_and_places_nothing(ais, tmp_path):
    ais.create_bucket("b")
    with pytest.raises(requests.HTTPError, match="404") as info:
        ais_download(ais.link("b", "nope.bin"), tmp_path)
    assert info.value.response.status_code == 404
    assert files(tmp_path) == []
    with pytest.raises(requests.HTTPError, match="404"):
        ais_download(ais.link("no-such-bucket", "x"), tmp_path)


def test_an_unsafe_object_name_fails_before_any_request(ais, tmp_path):
    ais.create_bucket("b")
    with pytest.raises(UnsafePathError):
        ais_download(ais.link("b", "dir/.."), tmp_path)
    assert ais.requests == []


def test_a_broken_download_resumes_with_range_and_if_range(ais, tmp_path):
    data = make_random_bytes(5 * MiB // 2, seed=5)
    ais.put("b", "big.bin", data, checksum="sha256")
    cut = 3 * MiB // 2
    ais.target.add_fault("v1/objects/b/big.bin", reset_after(cut))
    path = ais_download(ais.link("b", "big.bin"), tmp_path, sleep=lambda s: None)
    assert open(path, "rb").read() == data
    first, second = ais.object_requests("GET")
    assert first.range is None
    # whole 1 MiB reads reached the disk before the break: resume from there
    assert second.range in (f"bytes={cut}-", f"bytes={MiB}-") and second.status == 206
    assert second.headers["If-Range"].startswith('"v1-')


# --------------------------------------------------------------------------- listings


def test_listing_pages_through_the_bucket_with_prefix_and_suffix(ais):
    for i in range(10):
        ais.put("b", f"train/shard-{i:04d}.tgz", b"x" * i, checksum="md5")
        ais.put("b", f"train/shard-{i:04d}.json", b"{}")
    ais.put("b", "val/shard-0000.tgz", b"v")

    listing = list_ais(ais.link("b"), "train/", ".tgz")
    assert ais.list_requests() == []  # nothing asked before the first item is wanted
    name, attrs = next(listing)
    assert len(ais.list_requests()) == 1
    rest = list(listing)
    names = [name] + [n for n, _ in rest]
    assert names == [f"train/shard-{i:04d}.tgz" for i in range(10)]
    pages = ais.list_requests()
    assert len(pages) == 7  # 20 names under train/, 3 a page
    assert all(p.method == "GET" and p.query == {"provider": ["ais"]} for p in pages)
    assert all(p.body["action"] == "list" and p.body["value"]["prefix"] == "train/" for p in pages)
    tokens = [p.body["value"]["continuation_token"] for p in pages]
    assert tokens[0] == "" and all(tokens[1:]) and len(set(tokens)) == 7
    assert len({p.body["value"]["uuid"] for p in pages[1:]}) == 1
    assert attrs == ObjectAttrs(
        size=0, version="1", md5="d41d8cd98f00b204e9800998ecf8427e", source=ais.link("b", name)
    )


def test_listing_a_folder_link_and_unverifiable_checksums(ais):
    ais.put("b", "dir/a.bin", b"aa", checksum="xxhash")
    ais.put("b", "dir/b.bin", b"bbb", checksum="crc32c")
    ais.put("b", "dirt/c.bin", b"c")
    listed = dict(list_ais(ais.link("b", "dir/")))
    assert list(listed) == ["dir/a.bin", "dir/b.bin"]
    assert listed["dir/a.bin"] == ObjectAttrs(
        size=2, version="1", source=ais.link("b", "dir/a.bin")
    )
    assert listed["dir/b.bin"].crc32c == "2e0e7cc7"


def test_listing_a_missing_bucket_raises(ais):
    with pytest.raises(requests.HTTPError, match="404"):
        list(list_ais(ais.link("nope")))
    with pytest.raises(InvalidInputError, match="names no bucket"):
        list_ais("ais://127.0.0.1:1/")


def test_listed_attrs_skip_a_current_file_without_any_request(ais, tmp_path):
    ais.put("b", "md5.bin", b"one", checksum="md5")
    ais.put("b", "xx.bin", b"two", checksum="xxhash")
    listed = dict(list_ais(ais.link("b")))
    for name in listed:
        fetch_ais(ais.link("b", name), tmp_path, TransferOptions(remote_attrs=listed[name]))
    ais.clear_logs()

    # md5 from the listing is trusted alone: no request at all
    assert fetch_ais(
        ais.link("b", "md5.bin"), tmp_path, TransferOptions(remote_attrs=listed["md5.bin"])
    ).skipped
    assert ais.requests == [] and methods(ais) == []
    # an xxhash bucket lists size and version only, too little to decide: one HEAD
    assert fetch_ais(
        ais.link("b", "xx.bin"), tmp_path, TransferOptions(remote_attrs=listed["xx.bin"])
    ).skipped
    assert methods(ais) == ["HEAD"]

    ais.put("b", "md5.bin", b"ONE", checksum="md5")
    ais.clear_logs()
    listed = dict(list_ais(ais.link("b")))
    assert not fetch_ais(
        ais.link("b", "md5.bin"), tmp_path, TransferOptions(remote_attrs=listed["md5.bin"])
    ).skipped
    assert methods(ais) == ["HEAD", "GET"]
    assert (tmp_path / "md5.bin").read_bytes() == b"ONE"


def test_listed_attrs_download_a_new_object_with_one_get_verified(ais, tmp_path):
    ais.put("b", "a.bin", b"abc", checksum="sha256")
    ((_, attrs),) = list_ais(ais.link("b"))
    ais.clear_logs()
    fetch_ais(ais.link("b", "a.bin"), tmp_path, TransferOptions(remote_attrs=attrs))
    assert methods(ais) == ["GET"]
    stale = ObjectAttrs(size=3, sha256="0" * 64, source=attrs.source)
    with pytest.raises(ChecksumMismatchError):
        fetch_ais(ais.link("b", "a.bin"), tmp_path / "other", TransferOptions(remote_attrs=stale))


# --------------------------------------------------------------------------- templates


def test_range_template_of_ais_links(ais, tmp_path):
    for i in range(20, 33):
        ais.put("bucket", f"train-{i:04d}.tgz", f"shard {i}".encode(), checksum="md5")
    links = list(expand(f"ais://127.0.0.1:{ais.port}/bucket/train-{{0022..0030}}.tgz"))
    assert len(links) == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for link in links:
            assert not fetch_ais(link, tmp_path).skipped
    assert files(tmp_path) == [f"train-{i:04d}.tgz" for i in range(22, 31)]
    assert (tmp_path / "train-0025.tgz").read_bytes() == b"shard 25"
    assert all(fetch_ais(link, tmp_path).skipped for link in links)


def test_a_given_checksum_holds_for_a_same_size_file_already_there(ais, tmp_path):
    import hashlib

    ais.put("b", "a.bin", b"12345")
    (tmp_path / "a.bin").write_bytes(b"54321")  # same size, no record: pyvo would keep it
    digest = "md5:" + hashlib.md5(b"12345").hexdigest()
    with pytest.warns(CacheMismatchWarning, match="md5"):
        fetched = fetch_ais(ais.link("b", "a.bin"), tmp_path, TransferOptions(checksum=digest))
    assert not fetched.skipped and (tmp_path / "a.bin").read_bytes() == b"12345"
