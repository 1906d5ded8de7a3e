"""HuggingFace jobs: Job.hf, hf:// links in dlutils.download, blob_threshold."""

from __future__ import annotations

import pytest
from conftest import list_files as files
from conftest import make_random_bytes

import dlutils
from dlutils import InvalidInputError, Job, State
from dlutils.sandbox.hf_hub import HubStandIn

TOKEN = "hf_job_token_never_shown"
MiB = 1 << 20
DATA = {
    "README.md": b"# speech\n",
    "data/train/0.parquet": make_random_bytes(3000, seed=1),
    "data/validation/0.parquet": make_random_bytes(2000, seed=2),
}
MODEL = {"config.json": b"{}\n", "model.safetensors": make_random_bytes(5000, seed=3)}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def hub(monkeypatch):
    with HubStandIn(page_size=2, lfs_threshold=64) as stand_in:
        stand_in.add_repo("acme/speech", DATA)
        stand_in.add_repo("acme/speech", {"data/train/0.parquet": b"old" * 100}, revision="v1")
        stand_in.add_repo("acme/tiny", MODEL, repo_type="model")
        stand_in.add_repo("acme/secret", DATA, private=True, token=TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


def test_a_dataset_keeps_its_folders_and_a_rerun_fetches_nothing(hub, tmp_path):
    status = Job.hf(tmp_path / "d", dataset="acme/speech").start().wait(60)
    assert (status.state, status.finished, status.errors, status.total) == (
        State.FINISHED,
        3,
        0,
        3,
    )
    assert files(tmp_path / "d") == sorted(DATA)
    assert (tmp_path / "d/data/train/0.parquet").read_bytes() == DATA["data/train/0.parquet"]
    hub.clear_logs()
    again = Job.hf(tmp_path / "d", dataset="acme/speech").start().wait(60)
    assert (again.finished, again.skipped, again.bytes) == (3, 3, 0)
    assert hub.requests_to("resolve") == [] and hub.storage.requests == []


def test_hf_links_in_download_honour_the_revision(hub, tmp_path):
    job = dlutils.download("hf://datasets/acme/speech@v1", tmp_path / "v1")
    assert job.wait(60).finished == 1
    assert (tmp_path / "v1/data/train/0.parquet").read_bytes() == b"old" * 100
    one = dlutils.download("hf://datasets/acme/speech/README.md", tmp_path / "one")
    assert one.wait(60).finished == 1 and files(tmp_path / "one") == ["README.md"]


def test_a_model_through_an_hf_link(hub, tmp_path):
    status = dlutils.download("hf://acme/tiny", tmp_path).wait(60)
    assert status.finished == 2 and files(tmp_path) == sorted(MODEL)


def test_include_and_exclude(hub, tmp_path):
    job = Job.hf(tmp_path, dataset="acme/speech", include="data/*", exclude="*validation*")
    assert job.start().wait(60).finished == 1
    assert files(tmp_path) == ["data/train/0.parquet"]


def test_a_private_repo_with_a_token_that_never_reaches_storage(hub, tmp_path):
    refused = Job.hf(tmp_path / "no", dataset="acme/secret").start().wait(60)
    assert refused.errors == 1 and "token" in refused.download_errors[0][1]
    status = Job.hf(tmp_path / "yes", dataset="acme/secret", token=TOKEN).start().wait(60)
    assert status.finished == 3 and status.errors == 0
    assert all(TOKEN not in str(r.headers) for r in hub.storage.requests)
    assert any(TOKEN in str(r.headers) for r in hub.requests)
    assert TOKEN not in Job.hf(tmp_path, dataset="acme/secret", token=TOKEN).description


def test_blob_threshold_fetches_big_files_alone_in_ranges(monkeypatch, tmp_path):
    big = {f"shards/big-{i}.bin": make_random_bytes(3 * MiB, seed=10 + i) for i in range(3)}
    small = {f"small/{i}.txt": make_random_bytes(200, seed=20 + i) for i in range(5)}
    with HubStandIn(page_size=4, lfs_threshold=64) as hub:
        hub.add_repo("acme/blobs", {**big, **small})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        job = Job.hf(tmp_path, dataset="acme/blobs", blob_threshold="1MiB")
        status = job.start().wait(120)
        assert (status.finished, status.errors) == (8, 0)
        for name, data in {**big, **small}.items():
            assert (tmp_path / name).read_bytes() == data
        ranged = [r for r in hub.storage.requests if r.range]
        order = [r.path for r in ranged]
        # Every big file came in several ranges, and one big file at a time: the ranged
        # requests of one file never interleave with another's.
        assert len(ranged) >= 3 * 2
        firsts = [order.index(p) for p in dict.fromkeys(order)]
        lasts = [len(order) - 1 - order[::-1].index(p) for p in dict.fromkeys(order)]
        assert all(last < nxt for last, nxt in zip(lasts[:-1], firsts[1:], strict=True))
        assert not any(r.range for r in hub.storage.requests if r.bytes_sent <= 200)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of dataset= or model="),
        ({"dataset": "a/b", "model": "c/d"}, "exactly one"),
        ({"dataset": "a/b", "file": "x", "parquet": True}, "file= names one file"),
        ({"dataset": "a/b", "blob_threshold": "huge"}, "huge"),
    ],
)
def test_bad_hf_jobs(tmp_path, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        Job.hf(tmp_path, **kwargs)
