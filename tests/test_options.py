"""One typed Options object: every option visible in help(), checked once at the entry."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import pathlib
import pydoc
import sys

import pytest

import dlutils
from dlutils import (
    InvalidInputError,
    Job,
    Options,
    download,
    http_download,
    list_jobs,
    multi_download,
    range_download,
)
from dlutils.sources.classify import classify_source

FIELDS = [f for f in dataclasses.fields(Options)]


@pytest.mark.parametrize("function", [download, range_download, multi_download])
def test_every_option_is_a_keyword_of_the_entry_points_and_shows_in_help(function):
    parameters = inspect.signature(function).parameters
    for option in FIELDS:
        parameter = parameters[option.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, option.name
        assert parameter.default == option.default, option.name
    assert "options" in parameters
    text = pydoc.render_doc(function, renderer=pydoc.plaintext)
    for option in FIELDS:
        assert f"{option.name}" in text
    # each is described, not only named
    assert "bytes_per_hour : int or str, optional" in text
    assert '``"30s"``' in text or "'30s'" in text or '"30s"' in text


def test_options_documents_every_field():
    text = Options.__doc__
    for option in FIELDS:
        assert option.name in text, option.name


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"retries": -1}, r"retries=-1 is not valid: use an int >= 0, such as retries=5"),
        ({"retries": 2.5}, r"retries=2.5 is not valid"),
        ({"connections": "4"}, r"connections='4' is not valid: use an int >= 0"),
        ({"timeout": "30 seconds"}, r"timeout: .*'30 seconds'.*timeout='30s'"),
        ({"bytes_per_hour": "fast"}, r"bytes_per_hour: .*'fast'.*bytes_per_hour='10GiB'"),
        ({"segments": 0}, r"segments=0 is not valid: use an int >= 1"),
        ({"backoff": -1}, r"backoff=-1 is not valid: use seconds >= 0"),
        ({"transport": "pigeon"}, r"transport='pigeon' is not valid: use one of 'auto'"),
        ({"headers": {"X-Token": 5}}, r"headers=\{'X-Token': \.\.\.\} is not valid"),
        ({"cache": "no"}, r"cache='no' is not valid: use True \(.*False \(.*or 'verified'"),
    ],
)
def test_a_bad_option_is_refused_before_anything_starts(http_server, tmp_path, given, match):
    http_server.put("a.bin", b"a")
    before = len(list_jobs())
    with pytest.raises(InvalidInputError, match=match):
        download(http_server.url_for("a.bin"), tmp_path, **given)
    with pytest.raises(InvalidInputError, match=match):
        Options(**given)
    assert len(list_jobs()) == before  # no job was started
    assert list(tmp_path.iterdir()) == []


def test_a_header_value_is_never_shown_in_the_error():
    with pytest.raises(InvalidInputError) as info:
        Options(headers={"Authorization": b"Bearer s3cr3t"})
    assert "s3cr3t" not in str(info.value)


def test_a_typo_is_caught_at_the_call(http_server, tmp_path):
    link = http_server.url + "/a.bin"
    with pytest.raises(TypeError, match="conections"):
        download(link, tmp_path, conections=4)  # type: ignore[call-arg]
    with pytest.raises(InvalidInputError, match=r"'conections' \(did you mean 'connections'\?\)"):
        Job.single(link, tmp_path, conections=4)


def test_options_given_as_one_object_and_overridden_by_keywords(http_server, tmp_path):
    files = {f"o/{i}.bin": bytes([i]) * 1000 for i in range(4)}
    for name, data in files.items():
        http_server.put(name, data)
    shared = Options(connections=2, timeout="1m", description="from options")
    job = download(http_server.url + "/o/{0..3}.bin", tmp_path, options=shared, retries=1)
    status = job.wait(60)
    assert (status.finished, status.errors) == (4, 0)
    assert job.description == "from options"
    assert job._opts == shared.replace(retries=1)
    assert job._opts.timeout == 60.0
    for name, data in files.items():
        got = (tmp_path / name.split("/")[1]).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidInputError, match="options='fast' is not valid"):
        Job.single(http_server.url + "/o/0.bin", tmp_path, options="fast")


def test_http_download_reads_a_timeout_as_a_job_does(http_server, tmp_path):
    http_server.put("t.csv", b"a,b\n")
    path = http_download(http_server.url_for("t.csv"), tmp_path / "t.csv", timeout="30s")
    assert pathlib.Path(path).read_bytes() == b"a,b\n"
    path = http_download(http_server.url_for("t.csv"), tmp_path / "u.csv", timeout=(5, "1m"))
    assert pathlib.Path(path).read_bytes() == b"a,b\n"
    with pytest.raises(InvalidInputError, match=r"timeout='soon' is not valid: .*'30s'"):
        http_download(http_server.url_for("t.csv"), tmp_path / "v.csv", timeout="soon")
    assert not (tmp_path / "v.csv").exists()


def test_a_local_path_among_the_links_is_refused_clearly(http_server, tmp_path):
    links = [http_server.url + "/a.bin", pathlib.Path("data/b.bin")]
    with pytest.raises(InvalidInputError, match=r"PosixPath\('data/b.bin'\).*local path, not a"):
        download(links, tmp_path)
    with pytest.raises(InvalidInputError, match="local path, not a link"):
        multi_download(links, tmp_path)
    with pytest.raises(InvalidInputError, match="local path, not a link"):
        Job.multi({"b.bin": pathlib.Path("b.bin")}, tmp_path)
    with pytest.raises(InvalidInputError, match="local path, not a link"):
        download(pathlib.Path("data"), tmp_path)


def test_an_s3_template_without_boto3_fails_once_before_starting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    before = len(list_jobs())
    for call in (
        lambda: download("s3://bkt/shard-{0..99}.tar", tmp_path),
        lambda: Job.multi(["s3://bkt/a.tar", "s3://bkt/b.tar"], tmp_path),
        lambda: download("s3://bkt/folder/", tmp_path),
        lambda: range_download("s3://bkt/shard-{0..9}.tar", tmp_path),
    ):
        with pytest.raises(ImportError, match=r'pip install "dlutils-download\[s3\]"'):
            call()
    assert len(list_jobs()) == before


def test_range_and_multi_download_take_dest_and_keep_local_dirpath(http_server, tmp_path):
    http_server.put("m/a.txt", b"A")
    http_server.put("m/0.txt", b"0")
    paths = range_download(http_server.url + "/m/{0..0}.txt", dest=tmp_path / "r", subdir="s")
    assert [pathlib.Path(p).read_bytes() for p in paths] == [b"0"]
    assert pathlib.Path(paths[0]).parent == tmp_path / "r" / "s"
    paths = multi_download([http_server.url_for("m/a.txt")], dest=tmp_path / "new")
    assert pathlib.Path(paths[0]).read_bytes() == b"A"
    with pytest.warns(DeprecationWarning, match=r"local_dirpath=\.\.\.\) is deprecated: use dest="):
        paths = multi_download([http_server.url_for("m/a.txt")], local_dirpath=tmp_path / "old")
    assert pathlib.Path(paths[0]).parent == tmp_path / "old"
    with pytest.raises(InvalidInputError, match="both dest= and local_dirpath="):
        multi_download([http_server.url_for("m/a.txt")], tmp_path, local_dirpath=tmp_path)


def test_options_of_another_kind_of_source_are_refused(http_server, tmp_path):
    link = http_server.url + "/a.bin"
    with pytest.raises(InvalidInputError, match="sync apply to bucket links"):
        download(link, tmp_path, sync=True)
    with pytest.raises(InvalidInputError, match="parquet apply to hf:// links"):
        download(link, tmp_path, parquet=True)
    with pytest.raises(InvalidInputError, match="subdir apply to templates"):
        download(link, tmp_path, subdir="x")
    with pytest.raises(InvalidInputError, match="object_name apply to one link"):
        download(http_server.url + "/{0..1}.bin", tmp_path, object_name="x")


def test_classify_source_is_the_one_place_that_decides():
    assert classify_source("https://h/{0..3}.bin").kind == "range"
    assert classify_source("s3://bucket").kind == "backend"
    assert classify_source("s3://bucket/key.bin").kind == "single"
    assert classify_source("ais://host:8080/bucket/").kind == "backend"
    hub = classify_source("hf://datasets/org/name@v1/data/x.parquet")
    assert (hub.kind, hub.hf.repo_type, hub.hf.revision, hub.hf.path) == (
        "hf",
        "dataset",
        "v1",
        "data/x.parquet",
    )
    assert classify_source({"a": "https://h/a"}).objects == {"a": "https://h/a"}
    with pytest.raises(InvalidInputError, match="not a well-formed|%7B"):
        classify_source("https://h/{0..x}.bin")


def test_dlutils_exports_options():
    assert dlutils.Options is Options
    assert "Options" in dlutils.__all__


def test_every_source_reads_a_timeout_the_same_way(tmp_path):
    from dlutils import ais_download, aws_download, gcs_download, hf_download

    calls = [
        lambda t: http_download("https://example.org/a.csv", tmp_path / "a", timeout=t),
        lambda t: aws_download("s3://bkt/a.csv", local_filepath=tmp_path / "a", timeout=t),
        lambda t: gcs_download("gs://bkt/a.csv", local_filepath=tmp_path / "a", timeout=t),
        lambda t: ais_download("ais://127.0.0.1:9/bkt/a.csv", tmp_path / "a", timeout=t),
        lambda t: hf_download("org/name", "a.csv", local_dir=tmp_path, timeout=t),
    ]
    for call in calls:  # refused before any request: no network is reached
        with pytest.raises(InvalidInputError, match=r"timeout='soon' is not valid: .*'30s'"):
            call("soon")
