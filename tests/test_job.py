"""Jobs against the real local HTTP server: request types, counters, errors, limits, abort."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import list_files as files_in
from conftest import make_random_bytes

import dlutils
from dlutils import (
    InvalidInputError,
    Job,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    State,
    get_job,
    list_jobs,
    multi_download,
    range_download,
    remove_job,
)
from dlutils.localserver import stall, status

MiB = 1 << 20


@pytest.fixture
def shards(http_server):
    for i in range(20):
        http_server.put(f"d/s-{i:03d}.bin", bytes([i]) * (1000 + i))
    return http_server


# --------------------------------------------------------------------------- request types


def test_multi_with_a_list(shards, tmp_path):
    links = [shards.url_for(f"d/s-{i:03d}.bin") for i in (1, 2, 3)]
    status_ = Job.multi(links, tmp_path).start().wait(60)
    assert (status_.state, status_.finished, status_.errors, status_.total) == (
        State.FINISHED,
        3,
        0,
        3,
    )
    assert files_in(tmp_path) == ["s-001.bin", "s-002.bin", "s-003.bin"]
    assert (tmp_path / "s-002.bin").read_bytes() == bytes([2]) * 1002


def test_multi_with_a_map_keeps_subfolders(shards, tmp_path):
    objects = {"a/one.bin": shards.url_for("d/s-001.bin"), "two": shards.url_for("d/s-002.bin")}
    paths = multi_download(objects, tmp_path)
    assert sorted(paths) == sorted([str(tmp_path / "a" / "one.bin"), str(tmp_path / "two")])
    assert files_in(tmp_path) == ["a/one.bin", "two"]


def test_multi_list_with_clashing_names_is_refused(shards, tmp_path):
    links = [shards.url + "/x/a.bin", shards.url + "/y/a.bin", shards.url + "/z/b.bin"]
    links += [shards.url + "/q/b.bin?v=2"]
    with pytest.raises(InvalidInputError, match=r"2 name\(s\) .*'a.bin' <- .*/x/a.bin, .*/y/a.bin"):
        Job.multi(links, tmp_path)
    assert shards.requests == []


def test_multi_with_an_unsafe_name_is_refused(shards, tmp_path):
    with pytest.raises(dlutils.UnsafePathError, match=r"'\.\./evil' is not safe"):
        Job.multi({"../evil": shards.url_for("d/s-001.bin")}, tmp_path)


def test_range_with_subdir_and_step(shards, tmp_path):
    template = shards.url + "/d/s-{000..019..5}.bin"
    paths = range_download(template, tmp_path, subdir="train")
    assert files_in(tmp_path) == [f"train/s-{i:03d}.bin" for i in (0, 5, 10, 15)]
    assert paths == [str(tmp_path / "train" / f"s-{i:03d}.bin") for i in (0, 5, 10, 15)]


def test_range_varying_in_a_folder_is_refused(shards, tmp_path):
    with pytest.raises(InvalidInputError, match="varies before its last '/'"):
        Job.range(shards.url + "/{a,b}/file.bin", tmp_path)


@pytest.mark.parametrize(
    "tail", ["s-001.bin?part={1..3}", "s-{001..002}.bin?v={1..2}", "s.bin#{1..3}"]
)
def test_range_varying_in_the_query_or_fragment_is_refused(shards, tmp_path, tail):
    # Names drop the query and fragment: every link would be saved under one name, the job
    # reporting them all finished while the file holds one of them.
    with pytest.raises(InvalidInputError, match="varies in its query or fragment"):
        Job.range(shards.url + "/d/" + tail, tmp_path)


def test_range_with_a_slash_in_its_query_is_not_taken_for_a_folder(shards, tmp_path):
    paths = range_download(shards.url + "/d/s-{001..002}.bin?from=/a/b", tmp_path)
    assert files_in(tmp_path) == ["s-001.bin", "s-002.bin"] and len(paths) == 2


def test_single_with_object_name(shards, tmp_path):
    job = Job.single(shards.url_for("d/s-004.bin"), tmp_path, object_name="renamed.bin")
    assert job.start().wait(60).finished == 1
    assert files_in(tmp_path) == ["renamed.bin"]


def test_download_infers_the_request_type(shards, tmp_path):
    single = dlutils.download(shards.url_for("d/s-001.bin"), tmp_path / "a")
    ranged = dlutils.download(shards.url + "/d/s-{000..003}.bin", tmp_path / "b")
    multi = dlutils.download([shards.url_for("d/s-009.bin")], tmp_path / "c")
    for job in (single, ranged, multi):
        assert job.wait(60).state is State.FINISHED
    assert files_in(tmp_path / "a") == ["s-001.bin"]
    assert len(files_in(tmp_path / "b")) == 4
    assert files_in(tmp_path / "c") == ["s-009.bin"]


@pytest.mark.parametrize(
    ("link", "error"),
    [
        ("ftp://host/a.bin", dlutils.UnsupportedSchemeError),
        ("", InvalidInputError),
        ("https://host/dir/", InvalidInputError),
    ],
)
def test_bad_single_links(tmp_path, link, error):
    with pytest.raises(error):
        Job.single(link, tmp_path)


# --------------------------------------------------------------------------- errors per object


def test_three_of_fifty_missing_gives_47_files_and_3_errors(http_server, tmp_path):
    for i in range(50):
        if i not in (7, 21, 42):
            http_server.put(f"f/{i:02d}.bin", b"x" * 10)
    template = http_server.url + "/f/{00..49}.bin?sig=SECRET"
    job = Job.range(template, tmp_path).start()
    result = job.wait(60)
    assert (result.finished, result.errors, result.pending) == (47, 3, 0)
    assert len(files_in(tmp_path)) == 47
    assert [name for name, _ in result.download_errors] == ["07.bin", "21.bin", "42.bin"]
    for _, message in result.download_errors:
        assert "404" in message and "/f/" in message and "SECRET" not in message
    assert "SECRET" not in job.description
    with pytest.raises(JobFailedError, match="3 object") as info:
        range_download(template, tmp_path)
    assert len(info.value.errors) == 3


def test_per_object_timeout_on_a_stalling_link(http_server, tmp_path):
    http_server.put("a.bin", b"a" * 100)
    http_server.put("b.bin", b"b" * 100)
    for _ in range(3):
        http_server.add_fault("b.bin", stall(60, before_headers=True))
    job = Job.multi(
        [http_server.url_for("a.bin"), http_server.url_for("b.bin")],
        tmp_path,
        timeout="300ms",
        retries=2,
        backoff=0,
    )
    result = job.start().wait(60)
    assert (result.finished, result.errors) == (1, 1)
    assert "b.bin" in result.download_errors[0][0]
    assert "Timeout" in result.download_errors[0][1]


# --------------------------------------------------------------------------- status and re-runs


def test_status_counters_during_and_after_a_run(http_server, tmp_path):
    for i in range(6):
        http_server.put(f"s/{i}.bin", b"z" * 1000)
    http_server.add_fault("s/5.bin", stall(60, after_bytes=100))
    job = Job.range(http_server.url + "/s/{0..5}.bin", tmp_path, connections=2)
    assert job.status().state is State.PENDING
    job.start()
    deadline = time.monotonic() + 30
    while True:  # five finish; the sixth hangs mid-body
        during = job.status()
        if during.finished == 5 and during.current_tasks:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert during.state is State.RUNNING and during.finished_time is None
    assert during.total == 6 and during.pending == 1 and during.all_dispatched
    (current,) = during.current_tasks
    assert current.name == "5.bin" and current.total == 1000
    assert during.started_time is not None
    job.abort()
    after = job.wait(30)
    assert after.state is State.ABORTED and after.finished_time is not None
    assert after.finished == 5 and after.errors == 0 and after.bytes >= 5000
    data = after.to_dict()
    assert data["finished_cnt"] == 5 and data["error_cnt"] == 0 and data["aborted"] is True
    assert {"scheduled_cnt", "skipped_cnt", "download_errors", "current_tasks"} <= set(data)


def test_a_rerun_downloads_nothing_and_counts_skipped(shards, tmp_path):
    template = shards.url + "/d/s-{000..009}.bin"
    first = Job.range(template, tmp_path).start().wait(60)
    assert (first.finished, first.skipped) == (10, 0)
    shards.clear_log()
    second = Job.range(template, tmp_path).start().wait(60)
    assert (second.finished, second.skipped, second.bytes) == (10, 10, 0)
    assert {r.status for r in shards.requests} == {304}


def test_a_changed_object_is_fetched_again_on_rerun(shards, tmp_path):
    template = shards.url + "/d/s-{000..004}.bin"
    Job.range(template, tmp_path).start().wait(60)
    shards.put("d/s-002.bin", b"new content")
    second = Job.range(template, tmp_path).start().wait(60)
    assert (second.finished, second.skipped) == (5, 4)
    assert (tmp_path / "s-002.bin").read_bytes() == b"new content"


# --------------------------------------------------------------------------- registry


def test_registry_lists_by_regex_and_removes_only_finished_jobs(http_server, tmp_path):
    http_server.put("ok.bin", b"1")
    http_server.put("slow.bin", b"2" * 100)
    http_server.add_fault("slow.bin", stall(60, after_bytes=10))
    done = Job.single(http_server.url_for("ok.bin"), tmp_path, description="alpha imagenet")
    running = Job.single(http_server.url_for("slow.bin"), tmp_path, description="beta imagenet")
    done.start().wait(60)
    running.start()
    try:
        found = list_jobs(regex=r"^(alpha|beta) imagenet$")
        assert [job.id for job in found] == [running.id, done.id]  # running first
        assert [job.id for job in list_jobs(regex="beta", active_only=True)] == [running.id]
        assert get_job(done.id) is done
        with pytest.raises(JobStateError, match="is running"):
            remove_job(running.id)
        remove_job(done.id)
        with pytest.raises(JobNotFoundError, match=done.id):
            get_job(done.id)
        with pytest.raises(JobNotFoundError):
            remove_job("dnl-nope")
        with pytest.raises(InvalidInputError, match="regex"):
            list_jobs(regex="(")
    finally:
        running.abort()
        running.wait(30)
    remove_job(running.id)


def test_job_ids_and_descriptions(shards, tmp_path):
    job = Job.range(shards.url + "/d/s-{000..001}.bin?token=abc123", tmp_path)
    assert job.id.startswith("dnl-") and len(job.id) > 6
    assert job.description.endswith(f"-> {tmp_path}")
    assert "abc123" not in job.description
    with pytest.raises(JobStateError, match="never started"):
        job.wait(1)
    job.start()
    with pytest.raises(JobStateError, match="already started"):
        job.start()
    job.wait(60)


# --------------------------------------------------------------------------- abort


def test_abort_mid_job_leaves_parts_and_a_rerun_completes(http_server, tmp_path):
    big = make_random_bytes(3 * MiB)
    for i in range(4):
        http_server.put(f"b/{i}.bin", big)
        http_server.add_fault(f"b/{i}.bin", stall(600, after_bytes=2 * MiB))
    for i in range(4, 40):
        http_server.put(f"b/{i}.bin", b"small")
    template = http_server.url + "/b/{0..39}.bin"
    job = Job.range(template, tmp_path, connections=4).start()
    deadline = time.monotonic() + 30
    while sum(t.downloaded >= 2 * MiB for t in job.status().current_tasks) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.abort()
    result = job.wait(30)  # a stalled read is interrupted, not waited out
    assert result.state is State.ABORTED and result.errors == 0
    assert result.finished == 0 and result.pending == 40
    parts = sorted(p for p in os.listdir(tmp_path) if p.endswith(".part"))
    assert parts == [f"{i}.bin.part" for i in range(4)]
    job.abort()  # aborting again changes nothing
    rerun = Job.range(template, tmp_path).start().wait(60)
    assert (rerun.state, rerun.finished, rerun.errors) == (State.FINISHED, 40, 0)
    assert (tmp_path / "0.bin").read_bytes() == big
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]
    resumed = [r for r in http_server.requests if r.range]
    assert len(resumed) == 4 and all(r.range == f"bytes={2 * MiB}-" for r in resumed)


def test_aborting_a_finished_job_changes_nothing(shards, tmp_path):
    job = Job.single(shards.url_for("d/s-001.bin"), tmp_path).start()
    job.wait(60)
    job.abort()
    assert job.status().state is State.FINISHED


def test_aborting_a_pending_job(shards, tmp_path):
    job = Job.single(shards.url_for("d/s-001.bin"), tmp_path)
    job.abort()
    assert job.status().state is State.ABORTED


# --------------------------------------------------------------------------- limits


def test_the_connection_limit_is_seen_at_the_server(http_server, tmp_path):
    for i in range(24):
        http_server.put(f"c/{i:02d}.bin", b"c" * 200_000)
    http_server.rate_limit = 2 * MiB  # slow enough for transfers to overlap
    Job.range(http_server.url + "/c/{00..23}.bin", tmp_path, connections=3).start().wait(60)
    assert len(files_in(tmp_path)) == 24
    assert http_server.max_concurrent == 3


def test_bytes_per_hour_is_shared_by_the_job(http_server, tmp_path, monkeypatch):
    for i in range(4):
        http_server.put(f"r/{i}.bin", b"r" * 1000)
    seen = []
    original = dlutils.limits.TokenBucket.acquire

    def spy(self, nbytes, abort=None):
        seen.append((id(self), nbytes))
        return original(self, nbytes, abort)

    monkeypatch.setattr(dlutils.limits.TokenBucket, "acquire", spy)
    job = Job.range(http_server.url + "/r/{0..3}.bin", tmp_path, bytes_per_hour="1GiB")
    assert job.start().wait(60).finished == 4
    assert len({bucket for bucket, _ in seen}) == 1  # one bucket for every stream
    assert sum(n for _, n in seen) == 4000


def test_abort_does_not_wait_for_the_rate_limiter(http_server, tmp_path):
    http_server.put("slow.bin", b"s" * (3 * MiB))
    # One byte a second: the first 1 MiB chunk alone would wait twelve days.
    job = Job.single(http_server.url_for("slow.bin"), tmp_path, bytes_per_hour=3600).start()
    deadline = time.monotonic() + 30
    while not job.status().current_tasks:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    job.abort()
    assert job.wait(30).state is State.ABORTED


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"connections": -1}, "connections=-1 is not valid"),
        ({"bytes_per_hour": "lots"}, "lots"),
        ({"timeout": "1x"}, "1x"),
        ({"colour": "red"}, "unknown job option"),
        ({"executor": "threads"}, "executor="),
    ],
)
def test_bad_options(shards, tmp_path, opts, match):
    with pytest.raises(InvalidInputError, match=match):
        Job.single(shards.url_for("d/s-001.bin"), tmp_path, **opts)


# --------------------------------------------------------------------------- executors


def test_any_executor_can_run_the_tasks(shards, tmp_path):
    with ThreadPoolExecutor(3) as pool:
        result = Job.range(shards.url + "/d/s-{000..009}.bin", tmp_path, executor=pool)
        assert result.start().wait(60).finished == 10
    with ProcessPoolExecutor(2) as pool:
        job = Job.range(shards.url + "/d/s-{010..015}.bin", tmp_path / "p", executor=pool)
        result = job.start().wait(120)
    assert (result.finished, result.errors) == (6, 0)
    assert result.bytes == sum(1000 + i for i in range(10, 16))
    assert len(files_in(tmp_path / "p")) == 6


# --------------------------------------------------------------------------- requests


def test_from_request_valid_bodies(shards, tmp_path):
    bodies = [
        {"type": "single", "link": shards.url_for("d/s-001.bin"), "object_name": "one.bin"},
        {"type": "multi", "objects": [shards.url_for("d/s-002.bin")], "timeout": "1m30s"},
        {"type": "multi", "objects": {"m.bin": shards.url_for("d/s-003.bin")}},
        {
            "type": "range",
            "template": shards.url + "/d/s-{004..006}.bin",
            "subdir": "r",
            "description": "three shards",
            "limits": {"connections": 2, "bytes_per_hour": 10**9},
            "headers": {"X-Test": ["a", "b"]},
        },
    ]
    for body in bodies:
        assert Job.from_request(body, tmp_path).start().wait(60).finished >= 1
    assert files_in(tmp_path) == [
        "m.bin",
        "one.bin",
        "r/s-004.bin",
        "r/s-005.bin",
        "r/s-006.bin",
        "s-002.bin",
    ]
    assert {r.headers.get("X-Test") for r in shards.requests if "s-00" in r.path} >= {"a, b"}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({}, "no 'type'"),
        ({"type": "single"}, "missing 'link'"),
        ({"type": "range"}, "missing 'template'"),
        ({"type": "multi"}, "missing 'objects'"),
        ({"type": "multi", "objects": "http://h/a"}, "map .* or a list"),
        ({"type": "multi", "objects": [1, 2]}, "must hold strings"),
        (
            {"type": "single", "link": "http://h/a", "limits": {"connections": -1}},
            "limits.connections",
        ),
        (
            {"type": "single", "link": "http://h/a", "limits": {"bytes_per_hour": -5}},
            "limits.bytes_per_hour",
        ),
        ({"type": "single", "link": "http://h/a", "timeout": "soon"}, "soon"),
        ({"type": "nope"}, "request type 'nope'"),
        ([], "expected a JSON object"),
    ],
)
def test_from_request_invalid_bodies(tmp_path, body, match):
    with pytest.raises(InvalidInputError, match=match):
        Job.from_request(body, tmp_path)


# --------------------------------------------------------------------------- scale


def test_a_million_name_range_starts_at_once_and_aborts(http_server, tmp_path):
    http_server.put("m/0000000.bin", b"0")
    job = Job.range(http_server.url + "/m/{0000000..0999999}.bin", tmp_path, connections=4)
    assert job.status().total == 1_000_000
    job.start()
    deadline = time.monotonic() + 30
    while job.status().finished + job.status().errors < 50:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.abort()
    result = job.wait(60)
    assert result.state is State.ABORTED
    assert result.scheduled < 1000  # the queue is bounded: nothing was expanded ahead
    assert len(result.download_errors) == result.errors  # errors kept, finished ones not
    assert len(result.finished_tasks) <= dlutils.job.RECENT_TASKS


def test_wait_timeout(http_server, tmp_path):
    http_server.put("w.bin", b"w" * 100)
    http_server.add_fault("w.bin", stall(60, after_bytes=10))
    job = Job.single(http_server.url_for("w.bin"), tmp_path).start()
    with pytest.raises(TimeoutError, match="still running"):
        job.wait(0.2)
    job.abort()
    assert job.wait(30).state is State.ABORTED


def test_threads_are_released(shards, tmp_path):
    before = threading.active_count()
    Job.range(shards.url + "/d/s-{000..009}.bin", tmp_path).start().wait(60)
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= before


def test_a_server_error_status_is_recorded(http_server, tmp_path):
    http_server.put("e.bin", b"e")
    for _ in range(3):
        http_server.add_fault("e.bin", status(500))
    result = (
        Job.single(http_server.url_for("e.bin"), tmp_path, retries=2, backoff=0).start().wait(60)
    )
    assert result.errors == 1 and "500" in result.download_errors[0][1]


def test_an_executor_shut_down_under_the_job_ends_it_with_an_error(shards, tmp_path):
    pool = ThreadPoolExecutor(2)
    pool.shutdown()
    result = Job.range(shards.url + "/d/s-{000..003}.bin", tmp_path, executor=pool)
    status_ = result.start().wait(30)  # never hangs waiting for tasks that never started
    assert status_.state is State.FINISHED and not status_.all_dispatched
    assert status_.errors == 1 and status_.download_errors[0][0] == "<listing>"
    assert "shutdown" in status_.download_errors[0][1]


def test_status_counters_are_exact_while_objects_finish_concurrently(http_server, tmp_path):
    """Bytes are counted per task and join the job's count when a task ends: a status read
    at any moment neither loses nor counts twice the bytes of a task that is ending."""
    sizes = {f"c/f-{i:03d}.bin": 3000 + 7 * i for i in range(120)}
    for name, size in sizes.items():
        http_server.put(name, bytes([len(name) % 251]) * size)
    job = Job.range(http_server.url + "/c/f-{000..119}.bin", tmp_path, connections=8)
    seen: list[tuple[int, int]] = []
    beyond: list[tuple[int, int]] = []
    done = threading.Event()

    def poll():
        while not done.is_set():
            s = job.status()
            running = sum(t.downloaded for t in s.current_tasks)
            seen.append((s.bytes, s.finished))
            if running > s.bytes:  # the running tasks' bytes are part of the total
                beyond.append((running, s.bytes))
        seen.append((job.status().bytes, job.status().finished))

    poller = threading.Thread(target=poll)
    job.start()
    poller.start()
    final = job.wait(60)
    done.set()
    poller.join()
    assert (final.finished, final.errors) == (120, 0)
    assert beyond == []
    assert final.bytes == sum(sizes.values())
    assert all(b <= sum(sizes.values()) for b, _ in seen)
    assert [b for b, _ in seen] == sorted(b for b, _ in seen)  # never goes back
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    assert seen[-1] == (sum(sizes.values()), 120)
