"""Jobs on a real Dask cluster (``LocalCluster``, worker processes): dlutils.jobs.cluster."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

distributed = pytest.importorskip("distributed")

import requests  # noqa: E402
from conftest import make_random_bytes  # noqa: E402
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: E402, F401 - fixtures

import dlutils  # noqa: E402
from dlutils import InvalidInputError, Job, Options  # noqa: E402
from dlutils.jobs import cluster  # noqa: E402
from dlutils.jobs.records import FOLDER, read_records  # noqa: E402
from dlutils.jobs.status import State  # noqa: E402
from dlutils.localserver import LocalServer  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield client


def _files(n: int, size: int, prefix: str = "d/f") -> dict[str, bytes]:
    return {f"{prefix}{i:03d}.bin": make_random_bytes(size, seed=i) for i in range(n)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_files(files: dict[str, bytes], dest, strip: str = "d/") -> None:
    for path, data in files.items():
        with open(os.path.join(dest, path.removeprefix(strip)), "rb") as fh:
            assert _sha(fh.read()) == _sha(data), path


def _gets(server: LocalServer) -> Counter:
    return Counter(r.path for r in server.requests if r.method == "GET")


def test_500_objects_in_batches_counted_exactly(client, tmp_path):
    files = _files(500, 4096)
    with LocalServer(files) as server:
        with distributed.get_task_stream(client) as stream:
            job = Job.range(server.url + "/d/f{000..499}.bin", tmp_path, executor=client)
            status = job.start().wait(timeout=60)
        # batches of several objects, named after the job (what the dashboard shows)
        keys = {str(task["key"]) for task in stream.data}
        assert all(re.fullmatch(rf"dlutils-{job.id}-batch-\d+", key) for key in keys), keys
        assert 4 <= len(keys) < 100
        assert (status.state, status.finished, status.skipped, status.errors) == (
            State.FINISHED,
            500,
            0,
            0,
        )
        assert status.bytes == 500 * 4096 and status.current_tasks == ()
        _same_files(files, tmp_path)
        assert set(_gets(server).values()) == {1}
        # the batches' records, gathered into one for the job when it ended
        assert os.listdir(tmp_path / FOLDER) == [job.id + ".json"]
        objects, _ = read_records(tmp_path)
        assert len(objects) == 500 and objects["f007.bin"]["size"] == 4096

        # run again (get_executor() this time): the records say all is here
        server.clear_log()
        again = Job.range(
            server.url + "/d/f{000..499}.bin", tmp_path, executor=client.get_executor()
        ).start()
        status = again.wait(timeout=60)
        assert (status.finished, status.skipped, status.errors, status.bytes) == (500, 500, 0, 0)
        asked = server.requests  # each with the validator its record holds: nothing sent
        assert len(asked) == 500 and all(r.headers.get("If-None-Match") for r in asked)
        assert sum(r.bytes_sent for r in asked) == 0


def test_progress_is_live_and_abort_stops_running_transfers(client, tmp_path):
    files = _files(8, 4 << 20, prefix="big/f")
    with LocalServer(files) as server:
        server.rate_limit = 256 << 10  # each answer: 16 s
        job = Job.range(server.url + "/big/f{000..007}.bin", tmp_path, executor=client).start()
        deadline = time.monotonic() + 30
        status = job.status()
        while not (status.bytes > 0 and status.current_tasks) and time.monotonic() < deadline:
            time.sleep(0.1)
            status = job.status()
        assert status.bytes > 0 and any(t.downloaded > 0 for t in status.current_tasks)
        assert status.finished == 0  # live: nothing is complete yet
        job.abort()
        status = job.wait(timeout=15)
        assert status.state is State.ABORTED
        assert status.finished == 0 and status.errors == 0
        deadline = time.monotonic() + 10
        while server.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.active == 0  # every worker's transfer stopped
        seen = len(server.requests)
        time.sleep(1.5)
        assert len(server.requests) == seen  # and nothing is asked after the abort
        parts = [n for n in os.listdir(tmp_path) if n.endswith(".part")]
        assert parts and not [n for n in os.listdir(tmp_path) if n.endswith(".bin")]


def test_connections_cap_holds_across_the_cluster(client, tmp_path):
    files = _files(40, 64 << 10)
    with LocalServer(files) as server:
        server.rate_limit = 1 << 20  # 64 ms per answer: many would overlap without the cap
        job = Job.range(
            server.url + "/d/f{000..039}.bin", tmp_path, executor=client, connections=3
        ).start()
        status = job.wait(timeout=60)
        assert (status.finished, status.errors) == (40, 0)
        assert server.max_concurrent <= 3
        _same_files(files, tmp_path)


def test_bytes_per_hour_holds_across_the_cluster(client, tmp_path):
    files = _files(12, 256 << 10)
    rate = 1 << 20  # bytes per second, over the whole cluster
    with LocalServer(files) as server:
        began = time.monotonic()
        job = Job.range(
            server.url + "/d/f{000..011}.bin",
            tmp_path,
            executor=client,
            bytes_per_hour=rate * 3600,
        ).start()
        status = job.wait(timeout=60)
        elapsed = time.monotonic() - began
        sent = sum(r.bytes_sent for r in server.requests)
    assert (status.finished, status.errors) == (12, 0)
    assert sent == 12 * (256 << 10)
    # each running batch has an equal share of the rate and saves at most 1 s of it
    assert elapsed >= (sent - rate * 1.0) / rate
    _same_files(files, tmp_path)


def test_options_that_cannot_travel_are_named_before_start(client, tmp_path):
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: r)  # a lambda: does not pickle
    with pytest.raises(InvalidInputError, match=r"session=.*cannot be sent.*Client"):
        Job.single("http://127.0.0.1:9/a.bin", tmp_path, executor=client, session=session).start()
    assert not os.listdir(tmp_path)
    with pytest.raises(InvalidInputError, match="session_factory.*cannot be sent"):
        Job.single(
            "http://127.0.0.1:9/a.bin", tmp_path, executor=client, session_factory=lambda: session
        ).start()
    with pytest.raises(InvalidInputError, match="both given"):
        Options(session=session, session_factory=requests.Session)


def tagged_session() -> requests.Session:
    """A session factory for the workers (module level: it pickles by name)."""
    session = requests.Session()
    session.headers["X-Made-By"] = f"factory-{os.getpid()}"
    return session


def test_session_factory_is_called_on_the_workers(client, tmp_path):
    files = _files(6, 1000)
    pickle.dumps(tagged_session)
    with LocalServer(files) as server:
        job = Job.range(
            server.url + "/d/f{000..005}.bin",
            tmp_path,
            executor=client,
            session_factory=tagged_session,
        ).start()
        status = job.wait(timeout=60)
        assert (status.finished, status.errors) == (6, 0)
        made_by = {r.headers.get("X-Made-By") for r in server.requests}
    workers = set(client.run(os.getpid).values())
    assert made_by and made_by <= {f"factory-{pid}" for pid in workers}
    assert f"factory-{os.getpid()}" not in made_by


def test_a_destination_a_worker_does_not_see_is_refused_naming_it(client, tmp_path):
    marker = tmp_path / "probe"
    marker.write_text("token-1")
    assert cluster.workers_missing(client, str(marker), "token-1") == {}
    marker.write_text("token-2")  # what a worker with another filesystem there would read
    assert set(cluster.workers_missing(client, str(marker), "token-1")) == set(client.nthreads())
    marker.unlink()  # gone between write and check: every worker named, with the reason
    missing = cluster.workers_missing(client, str(marker), "token-1")
    assert set(missing) == set(client.nthreads())
    assert all("FileNotFoundError" in why for why in missing.values())


def test_a_cluster_with_no_workers_is_refused_before_start(tmp_path):
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty,
        distributed.Client(empty) as nobody,
    ):
        job = Job.single("http://127.0.0.1:9/a.bin", tmp_path, executor=nobody)
        with pytest.raises(InvalidInputError, match="no workers"):
            job.start()
        assert job.status().state is State.PENDING


def test_a_worker_with_another_filesystem_at_dest_is_refused_by_name(client, tmp_path):
    """A worker in a mount namespace of its own, a tmpfs over the destination's parent: a
    host that does not mount the shared filesystem, with an empty folder in its place."""
    shared = tmp_path / "shared"
    shared.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {shared}"], capture_output=True
    )
    if probe.returncode:
        pytest.skip("cannot make a mount namespace here (needs unshare and mount)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = (
        f"mount -t tmpfs none {shared} && exec {sys.executable} -m distributed.cli.dask_worker "
        f"{client.scheduler.address} --nthreads 1 --no-nanny --name outsider --no-dashboard"
    )
    before = set(client.nthreads())
    outsider = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", script],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client.wait_for_workers(len(before) + 1, timeout=30)
        (address,) = set(client.nthreads()) - before
        job = Job.single("http://127.0.0.1:9/a.bin", shared / "out", executor=client)
        with pytest.raises(InvalidInputError, match="not the same folder on every worker") as e:
            job.start()
        assert address in str(e.value) and not any(a in str(e.value) for a in before)
        assert not os.listdir(shared / "out" / FOLDER)  # the marker is gone again
    finally:
        outsider.terminate()
        outsider.wait(timeout=30)
        deadline = time.monotonic() + 30
        while set(client.nthreads()) != before and time.monotonic() < deadline:
            time.sleep(0.1)


def test_a_client_that_dies_leaves_no_download_running(client, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "STALE_AFTER", 2.0)
    files = _files(4, 8 << 20, prefix="big/f")
    with LocalServer(files) as server:
        server.rate_limit = 256 << 10
        other = distributed.Client(client.scheduler.address, set_as_default=False)
        job = Job.range(server.url + "/big/f{000..003}.bin", tmp_path, executor=other).start()
        deadline = time.monotonic() + 30
        while job.status().bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.active > 0
        # the driver's connection dies: its heartbeat stops reaching the scheduler (the
        # job's thread here cannot clean up through a closed client either)
        other.close()
        deadline = time.monotonic() + 20
        while server.active and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.active == 0
        seen = len(server.requests)
        time.sleep(1.0)
        assert len(server.requests) == seen
        job.wait(timeout=20)


def test_a_worker_killed_mid_job_changes_nothing_in_the_result(client, tmp_path):
    files = _files(300, 64 << 10)
    with LocalServer(files) as server:
        server.rate_limit = 512 << 10  # 0.125 s per object: the job lasts a few seconds
        job = Job.range(server.url + "/d/f{000..299}.bin", tmp_path, executor=client).start()
        deadline = time.monotonic() + 30
        while job.status().finished < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]
        done_before = {n for n in os.listdir(tmp_path) if n.endswith(".bin")}
        os.kill(pids[victim], signal.SIGKILL)
        status = job.wait(timeout=90)
        gets = _gets(server)
    assert (status.state, status.finished, status.skipped, status.errors) == (
        State.FINISHED,
        300,
        0,
        0,
    ), status.download_errors
    _same_files(files, tmp_path)
    assert len(done_before) >= 60
    # an object complete before the kill is never asked for again
    assert {gets[f"/d/{name}"] for name in done_before} == {1}
    assert status.bytes <= 300 * (64 << 10)
    client.wait_for_workers(2, timeout=30)


def test_a_relative_dest_is_the_client_folder_on_every_worker(client, tmp_path, monkeypatch):
    files = _files(10, 1000)
    monkeypatch.chdir(tmp_path)
    with LocalServer(files) as server:
        status = dlutils.download(server.url + "/d/f{000..009}.bin", "rel/", executor=client).wait(
            timeout=60
        )
    assert (status.finished, status.errors) == (10, 0)
    assert sorted(n for n in os.listdir(tmp_path / "rel") if n.endswith(".bin")) == sorted(
        p.removeprefix("d/") for p in files
    )
    _same_files(files, tmp_path / "rel")


def test_an_aborted_cluster_job_is_resumed_by_the_next_from_its_records(client, tmp_path):
    files = _files(4, 2 << 20, prefix="big/f")
    with LocalServer(files) as server:
        server.rate_limit = 512 << 10
        job = Job.range(server.url + "/big/f{000..003}.bin", tmp_path, executor=client).start()
        deadline = time.monotonic() + 30
        while job.status().bytes < (1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        job.abort()
        assert job.wait(timeout=15).state is State.ABORTED
        parts = {n: os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path) if ".part" in n}
        assert parts and all(parts.values())
        server.rate_limit = None
        server.clear_log()
        status = Job.range(server.url + "/big/f{000..003}.bin", tmp_path, executor=client)
        status = status.start().wait(timeout=60)
        assert (status.finished, status.errors) == (4, 0)
        _same_files(files, tmp_path, strip="big/")
        ranges = {r.path.rsplit("/", 1)[1]: r.range for r in server.requests if r.range}
        for part, size in parts.items():  # each resumed where the aborted job stopped
            assert ranges.get(part.removesuffix(".part")) == f"bytes={size}-"
        assert status.bytes == 4 * (2 << 20) - sum(parts.values())


def test_a_synchronising_backend_job_on_the_cluster_reads_and_deletes_through_records(
    client, tmp_path
):
    from dlutils.sandbox.aistore import AisStandIn

    with AisStandIn(page_size=3) as ais:
        for i in range(8):
            ais.put("data", f"train/{i:02d}.tgz", bytes([i]) * 100, checksum="md5")
        first = Job.backend(ais.link("data", "train/"), tmp_path, executor=client).start()
        assert first.wait(timeout=60).finished == 8
        (tmp_path / "mine.tgz").write_bytes(b"a user's own file")
        (tmp_path / "07.tgz").write_bytes(b"edited by hand")  # its record no longer holds
        for name in ("train/01.tgz", "train/02.tgz", "train/07.tgz"):
            ais.delete("data", name)
        status = Job.backend(ais.link("data", "train/"), tmp_path, sync=True, executor=client)
        status = status.start().wait(timeout=60)
    assert (status.deleted, status.errors, status.skipped) == (2, 0, 5)
    left = sorted(n for n in os.listdir(tmp_path) if not n.startswith(".dlutils-"))
    assert left == ["00.tgz", "03.tgz", "04.tgz", "05.tgz", "06.tgz", "07.tgz", "mine.tgz"]
    objects, _ = read_records(tmp_path)
    assert "01.tgz" not in objects and "02.tgz" not in objects and "00.tgz" in objects
    with AisStandIn() as empty:  # a listing that fails: one error, nothing deleted
        status = Job.backend(empty.link("nobucket"), tmp_path, sync=True, executor=client)
        status = status.start().wait(timeout=60)
    assert status.errors == 1 and status.download_errors[0][0] == "<listing>"
    assert status.deleted == 0 and (tmp_path / "00.tgz").exists()


def test_batch_records_survive_a_writer_killed_mid_line(tmp_path):
    from dlutils.freshness import ObjectAttrs
    from dlutils.jobs.records import BatchRecords, RecordsView

    (tmp_path / "a.bin").write_bytes(b"aaa")
    (tmp_path / "b.bin").write_bytes(b"bbbb")
    records = BatchRecords(str(tmp_path), "job-b000001", {})
    records.put(str(tmp_path / "a.bin"), ObjectAttrs(size=3, etag='"a"'))
    records.commit(str(tmp_path / "a.bin"), skipped=False, received=3)
    records.abandon()  # killed: the log stays, and a last line cut short after it
    log_path = tmp_path / FOLDER / "job-b000001-1.jsonl"
    with open(log_path, "a") as fh:
        fh.write('{"kind":"object","key":"b.bin","attrs":{},"si')
    objects, _ = read_records(tmp_path)
    assert list(objects) == ["a.bin"] and objects["a.bin"]["attrs"]["etag"] == '"a"'

    with open(log_path, "a") as fh:  # the killed run had begun b.bin too
        fh.write('\n{"kind":"partial","key":"b.bin","info":{"validator":"\\"b\\""}}\n')
    again = BatchRecords(str(tmp_path), "job-b000001", {})  # Dask runs the batch again
    assert again.placed_earlier(str(tmp_path / "a.bin"))["received"] == 3
    assert again.placed_earlier(str(tmp_path / "b.bin")) is None
    again.commit(str(tmp_path / "a.bin"), skipped=False, received=3)
    again.finish()  # one record for the batch, written whole; the logs go
    assert sorted(os.listdir(tmp_path / FOLDER)) == ["job-b000001.json"]
    objects, partials = read_records(tmp_path)
    assert objects["a.bin"]["size"] == 3
    assert partials == {"b.bin": {"validator": '"b"'}}  # b.bin unfinished: kept to resume
    view = RecordsView(str(tmp_path), "next-job")  # what the next job's client reads
    assert view.get("a.bin").etag == '"a"'
    (tmp_path / "a.bin").write_bytes(b"changed")  # a record holds only for the file it saw
    assert view.get("a.bin") is None


def test_secrets_reach_the_server_only(client, tmp_path):
    files = _files(5, 1000)
    token, signature = "Bearer tok-3f9a1c", "sig-77b2e0d4"
    with LocalServer(files) as server:
        links = {f"f{i}.bin": server.url_for(f"d/f{i:03d}.bin") + f"?X-Amz-Signature={signature}"
                 for i in range(5)}  # fmt: skip
        with distributed.get_task_stream(client) as stream:
            job = Job.multi(links, tmp_path, executor=client, headers={"Authorization": token})
            status = job.start().wait(timeout=60)
        assert (status.finished, status.errors) == (5, 0)
        assert {r.headers.get("Authorization") for r in server.requests} == {token}
    events = client.get_events(f"dlutils-{job.id}")
    assert events  # the reports came as events: names and counts only
    shown = " ".join(
        [
            repr(events),
            repr([task["key"] for task in stream.data]),
            repr(client.get_scheduler_logs(n=10_000)),
            repr(client.get_worker_logs(n=10_000)),
            os.path.join(tmp_path, FOLDER),
            *(open(e.path).read() for e in os.scandir(tmp_path / FOLDER)),
        ]
    )
    assert "f3.bin" in shown
    assert "tok-3f9a1c" not in shown and signature not in shown


def test_a_hub_job_with_its_endpoint_set_on_the_client_only(client, tmp_path):
    from dlutils import sandbox

    sandbox.hub()  # HF_ENDPOINT, here only: the workers started before it was set
    try:
        assert set(client.run(os.getenv, "HF_ENDPOINT").values()) == {None}
        job = dlutils.download(
            f"hf://datasets/{sandbox.HF_DATASET}", tmp_path, executor=client, blob_threshold=10
        )
        status = job.wait(timeout=60)
    finally:
        sandbox.stop_all()
    assert (status.finished, status.errors) == (3, 0), status.download_errors
    for name, data in sandbox.HF_FILES.items():  # big files too: a batch each, in ranges
        assert _sha((tmp_path / name).read_bytes()) == _sha(data)


def test_a_job_on_threads_reads_what_a_cluster_job_left(client, tmp_path):
    files = {**_files(3, 2 << 20, prefix="big/f"), **_files(4, 1000, prefix="big/s")}
    with LocalServer(files) as server:
        small = Job.range(server.url + "/big/s{000..003}.bin", tmp_path, executor=client)
        assert small.start().wait(timeout=60).finished == 4
        server.rate_limit = 512 << 10
        job = Job.range(server.url + "/big/f{000..002}.bin", tmp_path, executor=client).start()
        deadline = time.monotonic() + 30
        while job.status().bytes < (1 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        job.abort()
        assert job.wait(timeout=15).state is State.ABORTED
        parts = {n: os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path) if ".part" in n}
        assert parts and all(parts.values())
        server.rate_limit = None
        server.clear_log()
        links = [server.url + f"/big/{n}" for n in ("f000.bin", "f001.bin", "f002.bin")]
        links += [server.url + f"/big/s{i:03d}.bin" for i in range(4)]
        status = Job.multi(links, tmp_path).start().wait(timeout=60)  # threads
    assert (status.finished, status.errors, status.skipped) == (7, 0, 4)
    _same_files(files, tmp_path, strip="big/")
    asked = {r.path.rsplit("/", 1)[1]: r for r in server.requests}
    for i in range(4):  # known from the cluster's records: asked with their validators
        assert asked[f"s{i:03d}.bin"].headers.get("If-None-Match")
    for part, size in parts.items():  # resumed where the cluster stopped
        assert asked[part.removesuffix(".part")].range == f"bytes={size}-"


def test_a_cluster_job_streams_into_an_s3_prefix(s3, tmp_path):
    """The batches call the same fetch with the destination as given: into the store.

    Workers need the store's credentials: these start after the moto fixture set its
    fake ones, and inherit them (the client sends endpoints, never credentials)."""
    files = _files(40, 3000)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as local,
        distributed.Client(local, set_as_default=False) as own,
        LocalServer(files) as server,
    ):
        job = Job.range(server.url + "/d/f{000..039}.bin", s3.uri("shards/"), executor=own)
        status = job.start().wait(timeout=60)
        assert (status.finished, status.errors, status.skipped) == (40, 0, 0)
        assert status.bytes == 40 * 3000
        for path, data in files.items():
            key = "shards/" + path.removeprefix("d/")
            body = s3.client.get_object(Bucket=s3.name, Key=key)["Body"].read()
            assert _sha(body) == _sha(data)
        server.clear_log()
        again = Job.range(server.url + "/d/f{000..039}.bin", s3.uri("shards/"), executor=own)
        status = again.start().wait(timeout=60)
        assert (status.finished, status.skipped) == (40, 40)
        assert sum(r.bytes_sent for r in server.requests) == 0  # asked; no body came
    assert not os.listdir(tmp_path)  # nothing local: no records beside a store


def test_memory_is_refused_on_a_cluster(client):
    with pytest.raises(InvalidInputError, match="this process's memory"):
        Job.single("http://127.0.0.1:9/a.bin", "memory://bucket/x/", executor=client).start()


def test_bytes_of_a_run_lost_with_its_worker_are_counted_once():
    # A run reported 40 KiB of a 64 KiB object, then died with its worker; Dask's rerun
    # fetched the object again and finished it. The job counts the object's bytes once
    # (seen in the full suite under load: status.bytes above the files' total).
    counting = cluster._Counting(tasks=[])
    size = 64 << 10
    added = counting.credit(0, "lost", 40 << 10, size)
    added += counting.credit(0, "rerun", 30 << 10, size)
    added += counting.credit(0, "rerun", size, size)
    added += counting.credit(0, "rerun", size, size)  # the final report repeats it
    assert added == size
    assert counting.credit(1, "only", 10, None) == 10  # no size known: as reported
