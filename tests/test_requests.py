"""AIStore downloader JSON requests (``Job.from_request``), the samples of its docs verbatim,
and malformed templates refused at every entry point (issue 11, items 5-7)."""

from __future__ import annotations

import hashlib

import pytest
from conftest import list_files as files

import dlutils
from dlutils import InvalidInputError, Job, UnsupportedSchemeError
from dlutils.sandbox.aistore import AisStandIn

# The range samples of AIStore's docs/downloader.md, verbatim.
SAMPLE_RANGE = {
    "type": "range",
    "bucket": {"name": "test"},
    "template": "randomwebsite.com/some_dir/object{200..300}log.txt",
}
SAMPLE_SUBDIR = {
    "type": "range",
    "bucket": {"name": "test"},
    "template": "randomwebsite.com/some_dir/object{200..300}log.txt",
    "subdir": "some/subdir/",
}
SAMPLE_TENTH = {
    "type": "range",
    "bucket": {"name": "test"},
    "template": "randomwebsite.com/some_dir/object{1..1000..10}log.txt",
}


def body(i: int) -> bytes:
    return f"log {i}\n".encode() * (i % 7 + 1)


@pytest.fixture
def website(http_server, monkeypatch):
    """``randomwebsite.com/some_dir/`` served by the local server, reached as an HTTP proxy
    (absolute-form requests), so that the samples run as written and nothing leaves 127.0.0.1."""
    for i in range(1, 1001):
        http_server.put(f"some_dir/object{i}log.txt", body(i))
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", http_server.url)
    return http_server


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ 5. the samples as written


def test_the_range_sample_with_a_subdir_runs_as_written(website, tmp_path):
    status = Job.from_request(SAMPLE_SUBDIR, tmp_path).start().wait(60)
    assert (status.finished, status.errors, status.total) == (101, 0, 101)
    expected = [f"some/subdir/object{i}log.txt" for i in range(200, 301)]
    assert files(tmp_path) == sorted(expected)
    for i in (200, 257, 300):
        got = (tmp_path / f"some/subdir/object{i}log.txt").read_bytes()
        assert sha(got) == sha(body(i))
    hosts = {r.headers.get("Host") for r in website.requests if r.method == "GET"}
    assert hosts == {"randomwebsite.com"}  # taken as http://randomwebsite.com/..., as AIS does


def test_the_other_range_samples_run_as_written(website, tmp_path):
    status = Job.from_request(SAMPLE_RANGE, tmp_path / "a").start().wait(60)
    assert (status.finished, status.errors) == (101, 0)
    assert sha((tmp_path / "a" / "object300log.txt").read_bytes()) == sha(body(300))
    status = Job.from_request(SAMPLE_TENTH, tmp_path / "b").start().wait(60)
    assert (status.finished, status.errors) == (100, 0)
    assert files(tmp_path / "b") == sorted(f"object{i}log.txt" for i in range(1, 1001, 10))


def test_single_and_multi_links_without_a_scheme_are_http_links(website, tmp_path):
    single = {"type": "single", "link": "randomwebsite.com/some_dir/object7log.txt"}
    assert Job.from_request(single, tmp_path).start().wait(60).finished == 1
    multi = {"type": "multi", "objects": {"x.txt": "randomwebsite.com/some_dir/object8log.txt"}}
    assert Job.from_request(multi, tmp_path).start().wait(60).finished == 1
    assert (tmp_path / "object7log.txt").read_bytes() == body(7)
    assert (tmp_path / "x.txt").read_bytes() == body(8)


def test_a_template_without_a_scheme_is_refused_elsewhere_showing_the_fix(tmp_path):
    template = "randomwebsite.com/some_dir/object{200..300}log.txt"
    fixed = "'https://randomwebsite.com/some_dir/object{200..300}log.txt'"
    for call in (
        lambda: Job.range(template, tmp_path),
        lambda: dlutils.download(template, tmp_path),
        lambda: dlutils.range_download(template, tmp_path),
    ):
        with pytest.raises(UnsupportedSchemeError, match=f"no scheme; write it as {fixed}"):
            call()
    assert files(tmp_path) == []


# ------------------------------------------------------------------ 6. backend requests


@pytest.fixture
def cluster():
    with AisStandIn() as stand_in:
        for i in range(4):
            stand_in.put("imgs", f"{i}.jpg", bytes([i]) * 50, checksum="md5")
        yield stand_in


def test_sync_as_documented_deletes_what_vanished(cluster, tmp_path):
    request = {"type": "backend", "bucket": cluster.link("imgs")}
    assert Job.from_request(request, tmp_path).start().wait(60).finished == 4
    cluster.delete("imgs", "2.jpg")
    status = Job.from_request({**request, "sync": True}, tmp_path).start().wait(60)
    assert status.deleted == 1 and files(tmp_path) == ["0.jpg", "1.jpg", "3.jpg"]
    cluster.delete("imgs", "3.jpg")  # AIStore's own JSON tag still works
    status = Job.from_request({**request, "synchronize": True}, tmp_path).start().wait(60)
    assert status.deleted == 1 and files(tmp_path) == ["0.jpg", "1.jpg"]


@pytest.mark.parametrize("bucket", [{"name": "imgs"}, {"name": "imgs", "provider": "ais"}])
def test_a_bucket_without_provider_is_an_aistore_bucket(cluster, tmp_path, monkeypatch, bucket):
    monkeypatch.setenv("AIS_ENDPOINT", f"http://127.0.0.1:{cluster.port}")
    status = Job.from_request({"type": "backend", "bucket": bucket}, tmp_path).start().wait(60)
    assert (status.finished, status.errors) == (4, 0)
    assert (tmp_path / "3.jpg").read_bytes() == bytes([3]) * 50


def test_an_aistore_bucket_without_ais_endpoint_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("AIS_ENDPOINT", raising=False)
    with pytest.raises(InvalidInputError, match="AIS_ENDPOINT is not set"):
        Job.from_request({"type": "backend", "bucket": {"name": "imgs"}}, tmp_path)


# ------------------------------------------------------------------ 7. malformed templates

MALFORMED = ["shard-{0..9.tar", "shard-{9..0}.tar", "shard-{00..19..0}.tar", "shard-{a}.tar"]


@pytest.mark.parametrize("name", MALFORMED)
def test_download_refuses_a_malformed_template_before_anything_starts(http_server, tmp_path, name):
    link = http_server.url + "/" + name
    with pytest.raises(InvalidInputError, match=r"percent-encoded \('%7B' for '\{'"):
        dlutils.download(link, tmp_path)
    with pytest.raises(InvalidInputError, match="is not valid"):
        Job.from_request({"type": "range", "template": link}, tmp_path)
    assert http_server.requests == [] and files(tmp_path) == []
    assert not any(job.description.startswith(link) for job in dlutils.list_jobs())


def test_percent_encoded_braces_are_one_literal_link(http_server, tmp_path):
    http_server.put("odd-{name}.txt", b"literal braces")
    job = dlutils.download(http_server.url + "/odd-%7Bname%7D.txt", tmp_path)
    assert job.wait(60).finished == 1
    assert (tmp_path / "odd-{name}.txt").read_bytes() == b"literal braces"
