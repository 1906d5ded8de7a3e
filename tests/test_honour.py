"""Issue 14, "nothing dropped silently": what dlutils cannot honour is refused before it starts.

Destinations that are URLs dlutils does not write to (``gs://``, ``ftp://``...) are refused
by every entry point (``s3://``, ``memory://`` and ``file://`` are destinations: see
``test_destinations_fsspec.py``);
on an executor of other processes, ``bytes_per_hour`` is refused, an option that does not
pickle is named, the client's endpoint settings and folder travel with each task, and
``abort()`` cancels what has not started. The process pools here use the ``spawn`` context,
so that a worker's environment and folder are those it started with, as on a cluster.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pathlib
import re
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import requests
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401 - fixtures

import dlutils
from dlutils import InvalidInputError, Job, Options
from dlutils.localserver import stall
from dlutils.sources.ais import ais_download
from dlutils.sources.aws import aws_download
from dlutils.sources.gcs import gcs_download
from dlutils.sources.hf.download import hf_download
from dlutils.sources.http import http_download

CLOSED = "127.0.0.1:9"  # nothing listens there: a request that slips through fails, locally

NOT_LOCAL = r"is not a destination dlutils writes to \(\w+:// is not supported.*\); use a local"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path) -> str:
    return sha256(pathlib.Path(path).read_bytes())


def spawned_pool(workers: int = 1) -> ProcessPoolExecutor:
    """A pool whose workers have started (with this environment and folder) already."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    assert pool.submit(os.getpid).result(timeout=120) != os.getpid()
    return pool


@pytest.fixture
def no_cloud(monkeypatch):
    """Every cloud endpoint points at a closed local port: nothing can reach the internet."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{CLOSED}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", CLOSED)
    monkeypatch.setenv("HF_ENDPOINT", f"http://{CLOSED}")
    monkeypatch.setenv("AIS_ENDPOINT", f"http://{CLOSED}")


@pytest.mark.parametrize("dest", ["gs://bucket/p", "ftp://host/pub/", "hdfs://nn/data/"])
def test_an_unsupported_destination_is_refused_by_every_entry_before_any_request(
    dest, http_server, tmp_path, monkeypatch, no_cloud
):
    monkeypatch.chdir(tmp_path)
    http_server.put("d/f0.bin", b"zero")
    link = http_server.url_for("d/f0.bin")
    template = http_server.url + "/d/f{0..0}.bin"
    entries = {
        "download": lambda: dlutils.download(link, dest),
        "download range": lambda: dlutils.download(template, dest),
        "Job.single": lambda: Job.single(link, dest),
        "Job.multi": lambda: Job.multi([link], dest),
        "Job.range": lambda: Job.range(template, dest),
        "Job.backend": lambda: Job.backend("s3://src-bucket/", dest),
        "Job.hf": lambda: Job.hf(dest, model="org/tiny"),
        "from_request": lambda: Job.from_request({"type": "single", "link": link}, dest),
        "range_download": lambda: dlutils.range_download(template, dest),
        "multi_download": lambda: dlutils.multi_download([link], dest),
    }
    for call in entries.values():
        with pytest.raises(InvalidInputError, match=f"dest {dest!r} {NOT_LOCAL}"):
            call()
    functions = {
        "http_download": lambda: http_download(link, dest),
        "aws_download": lambda: aws_download("s3://src-bucket/k.bin", local_filepath=dest),
        "gcs_download": lambda: gcs_download("gs://src-bucket/k.bin", local_filepath=dest),
        "ais_download": lambda: ais_download(f"ais://{CLOSED}/src-bucket/k.bin", dest),
        "hf_download": lambda: hf_download("org/tiny", "a.txt", dest, retries=0),
    }
    for name, call in functions.items():
        what = "local_dir" if name == "hf_download" else "local_filepath"
        with pytest.raises(InvalidInputError, match=f"{what} {dest!r} {NOT_LOCAL}"):
            call()
    assert http_server.requests == []
    assert os.listdir(tmp_path) == []  # no folder named 'gs:' or 'ftp:'


def test_a_file_url_is_the_path_it_names_and_a_drive_letter_is_a_path(
    http_server, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    http_server.put("a.txt", b"abc")
    link = http_server.url_for("a.txt")
    given = (tmp_path / "out").as_uri()
    assert dlutils.download(link, given).wait(timeout=60).finished == 1
    assert file_sha256(tmp_path / "out" / "a.txt") == sha256(b"abc")
    assert http_download(link, given + "/b.txt") == f"{tmp_path}/out/b.txt"
    assert file_sha256(tmp_path / "out" / "b.txt") == sha256(b"abc")
    with pytest.raises(InvalidInputError, match="names host 'elsewhere'"):
        dlutils.download(link, "file://elsewhere/data/")
    # 'C:/data' is a Windows path (here: a folder 'C:' in the current one), never a URL
    status = dlutils.download(link, "C:/data/").wait(timeout=60)
    assert (status.finished, status.errors) == (1, 0)
    assert file_sha256(tmp_path / "C:" / "data" / "a.txt") == sha256(b"abc")


def test_bytes_per_hour_on_an_executor_of_other_processes_is_refused_before_it_starts(
    http_server, tmp_path
):
    http_server.put("a.bin", b"x" * 1000)
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(InvalidInputError, match="bytes_per_hour='1MiB' cannot be honoured"):
            dlutils.download(http_server.url_for("a.bin"), tmp_path, executor=pool,
                             bytes_per_hour="1MiB")  # fmt: skip
        with pytest.raises(InvalidInputError, match="executor=ProcessPoolExecutor"):
            Options(executor=pool, bytes_per_hour=3600)
    assert http_server.requests == [] and os.listdir(tmp_path) == []
    with ThreadPoolExecutor(2) as threads:  # a thread pool shares the limiter: allowed
        assert Options(executor=threads, bytes_per_hour=3600).bytes_per_hour == 3600


def test_an_option_that_does_not_pickle_is_named_before_anything_starts(http_server, tmp_path):
    http_server.put("a.bin", b"x" * 1000)
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: response)
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(
            InvalidInputError,
            match=r"session=<requests.sessions.Session> cannot be sent to the workers of "
            r"executor=ProcessPoolExecutor .*leave session= unset",
        ):
            dlutils.download(http_server.url_for("a.bin"), tmp_path, executor=pool,
                             session=session, transport="requests")  # fmt: skip
    assert http_server.requests == [] and os.listdir(tmp_path) == []
    assert not [job for job in dlutils.list_jobs() if http_server.url in job.description]


def test_the_clients_endpoint_reaches_workers_that_started_without_it(s3, tmp_path, monkeypatch):
    data = os.urandom(3000)
    s3.put("d/k.bin", data)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{CLOSED}")  # what the worker knows
    pool = spawned_pool()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # set on the client only
        status = dlutils.download(s3.uri("d/k.bin"), tmp_path, executor=pool,
                                  retries=0).wait(timeout=120)  # fmt: skip
        assert (status.finished, status.errors, status.download_errors) == (1, 0, ())
        assert file_sha256(tmp_path / "k.bin") == sha256(data)
        # the worker's own setting is back once the task is done
        assert pool.submit(os.getenv, "AWS_ENDPOINT_URL").result() == f"http://{CLOSED}"
    finally:
        pool.shutdown()


def test_a_relative_dest_is_the_clients_folder_not_each_workers(http_server, tmp_path, monkeypatch):
    files = {f"d/f{i}.bin": os.urandom(500 + i) for i in range(3)}
    for path, data in files.items():
        http_server.put(path, data)
    (tmp_path / "worker").mkdir()
    (tmp_path / "client").mkdir()
    monkeypatch.chdir(tmp_path / "worker")
    pool = spawned_pool()
    try:
        monkeypatch.chdir(tmp_path / "client")
        job = dlutils.download(http_server.url + "/d/f{0..2}.bin", "out", executor=pool)
        status = job.wait(timeout=120)
        assert (status.finished, status.errors) == (3, 0)
    finally:
        pool.shutdown()
    for i in range(3):
        assert file_sha256(tmp_path / "client" / "out" / f"f{i}.bin") == sha256(
            files[f"d/f{i}.bin"]
        )
    assert os.listdir(tmp_path / "worker") == []
    assert job.paths == [os.path.join("out", f"f{i}.bin") for i in range(3)]  # as given


def test_abort_on_other_processes_cancels_what_has_not_started(http_server, tmp_path, caplog):
    files = {f"d/f{i}.bin": bytes([i]) * 2000 for i in range(12)}
    for path, data in files.items():
        http_server.put(path, data)
    http_server.add_fault("d/f0.bin", stall(3.0, after_bytes=100))
    pool = spawned_pool()
    try:
        job = dlutils.download(http_server.url + "/d/f{0..11}.bin", tmp_path, executor=pool,
                               retries=0, connections=12)  # fmt: skip
        for _ in range(600):  # the first transfer has begun in the worker
            if http_server.requests_for("d/f0.bin"):
                break
            job._done.wait(0.05)
        sent = job.status().current_tasks
        assert len(sent) == 12  # sent to the executor: shown, with no bytes yet
        job.abort()
        status = job.wait(timeout=60)
    finally:
        pool.shutdown()
    assert status.state.value == "aborted"
    # a process pool runs one and holds a couple more (marked running): those ran to the
    # end, as the log said; the others were cancelled, never fetched
    said = re.search(r"aborted: (\d+) transfers already running on executor "
                     r"ProcessPoolExecutor cannot be stopped", caplog.text)  # fmt: skip
    assert said is not None
    assert status.finished == int(said.group(1)) <= 3 and status.errors == 0
    assert status.scheduled == status.finished and status.current_tasks == ()
    fetched = {r.path for r in http_server.requests}
    assert len(fetched) == status.finished
    for i in range(12):
        path = tmp_path / f"f{i}.bin"
        assert path.exists() == (f"/d/f{i}.bin" in fetched)
        if path.exists():
            assert file_sha256(path) == sha256(files[f"d/f{i}.bin"])
