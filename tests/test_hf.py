"""The hf:// source against a local hub stand-in (hub + storage host on 127.0.0.1)."""

from __future__ import annotations

import os

import pytest
import requests
from conftest import list_files as files_in
from conftest import make_random_bytes

from dlutils import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    DownloadError,
    InvalidInputError,
    JobFailedError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from dlutils.freshness import Manifest
from dlutils.localserver import LocalServer, status
from dlutils.sandbox.hf_hub import HubStandIn, sha256
from dlutils.sources.hf import (
    HfAuthError,
    HfRef,
    fetch_hf,
    hf_download,
    hf_endpoint,
    hf_token,
    list_hf,
    parse_hf,
    resolve_url,
    stat_hf,
)
from dlutils.transfer import TransferOptions

TOKEN = "hf_secret_token_never_shown"
GATED_TOKEN = "hf_gated_token_never_shown"

TRAIN = make_random_bytes(300, seed=1)
VALIDATION = make_random_bytes(200, seed=2)
OLD_TRAIN = make_random_bytes(280, seed=3)
WEIGHTS = make_random_bytes(500, seed=4)
SPEECH = {
    "README.md": b"# speech\n",
    "data/meta.json": b'{"rows": 2}\n',
    "data/train/0.parquet": TRAIN,
    "data/validation/0.parquet": VALIDATION,
}
SPEECH_V1 = {"README.md": b"# speech v1\n", "data/train/0.parquet": OLD_TRAIN}
EXPORT = {
    ".gitattributes": b"*.parquet filter=lfs\n",
    "default/train/0000.parquet": make_random_bytes(120, seed=5),
    "default/validation/0000.parquet": make_random_bytes(110, seed=6),
    "other/train/0000.parquet": make_random_bytes(100, seed=7),
    "big/partial-train/0000.parquet": make_random_bytes(90, seed=8),
}
MODEL = {
    "config.json": b'{"hidden": 8}\n',
    "model.safetensors": WEIGHTS,
    "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n",
}
SECRET = {"notes.txt": b"private notes\n", "data.bin": make_random_bytes(150, seed=9)}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No token from the environment unless a test sets one; the current folder is the test's."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def hub(monkeypatch):
    with HubStandIn(page_size=3, lfs_threshold=64) as stand_in:
        stand_in.commits = {
            "main": stand_in.add_repo("acme/speech", SPEECH),
            "v1.0": stand_in.add_repo("acme/speech", SPEECH_V1, revision="v1.0"),
        }
        stand_in.add_repo("acme/speech", {"x/y.txt": b"branch\n"}, revision="release/2024")
        stand_in.add_repo("acme/speech", EXPORT, revision="refs/convert/parquet")
        stand_in.add_repo("acme/tiny-bert", MODEL, repo_type="model")
        stand_in.add_repo("acme/secret", SECRET, private=True, token=TOKEN)
        stand_in.add_repo("acme/gated", MODEL, repo_type="model", gated=True, token=GATED_TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    "link, expected",
    [
        ("hf://datasets/org/name", HfRef("dataset", "org/name")),
        ("hf://datasets/org/name/", HfRef("dataset", "org/name")),
        (
            "hf://datasets/org/name@v1.0/data/a.csv",
            HfRef("dataset", "org/name", "v1.0", "data/a.csv"),
        ),
        ("hf://org/bert/config.json", HfRef("model", "org/bert", "main", "config.json")),
        (
            "hf://models/org/bert@main/config.json",
            HfRef("model", "org/bert", "main", "config.json"),
        ),
        ("HF://org/bert", HfRef("model", "org/bert")),
        ("hf://gpt2", HfRef("model", "gpt2")),
        ("hf://gpt2@v2/config.json", HfRef("model", "gpt2", "v2", "config.json")),
        ("hf://datasets/squad@main", HfRef("dataset", "squad")),
        ("hf://datasets/o/n@refs%2Fpr%2F1/a.txt", HfRef("dataset", "o/n", "refs/pr/1", "a.txt")),
        ("hf://datasets/o/n@refs/pr/1/a.txt", HfRef("dataset", "o/n", "refs/pr/1", "a.txt")),
        ("hf://datasets/o/n@refs/pr/12", HfRef("dataset", "o/n", "refs/pr/12")),
        (
            "hf://datasets/o/n@refs/convert/parquet/default/train/0000.parquet",
            HfRef("dataset", "o/n", "refs/convert/parquet", "default/train/0000.parquet"),
        ),
        ("hf://o/n@feature%2Fx/a.txt", HfRef("model", "o/n", "feature/x", "a.txt")),
        ("hf://o/n@feature/x/a.txt", HfRef("model", "o/n", "feature", "x/a.txt")),
        ("hf://o/n/img@2x.png", HfRef("model", "o/n", "main", "img@2x.png")),
        ("hf://o/n/a b/c#1?.txt", HfRef("model", "o/n", "main", "a b/c#1?.txt")),
    ],
)
def test_parse_hf(link, expected):
    assert parse_hf(link) == expected
    assert parse_hf(expected.link) == expected  # the canonical link reads back


@pytest.mark.parametrize(
    "link, error, match",
    [
        ("", InvalidInputError, "for instance 'hf://datasets/"),
        ("s3://bucket/key", UnsupportedSchemeError, "not an hf:// link"),
        ("hf://", InvalidInputError, "for instance 'hf://datasets/"),
        ("hf://datasets/", InvalidInputError, "repository id ''"),
        ("hf://datasets", InvalidInputError, "names no repository"),
        ("hf://datasets/org/na..me", InvalidInputError, "no '--' or '..'"),
        ("hf://org/-name", InvalidInputError, "is not valid"),
        ("hf://o/n@/a.txt", InvalidInputError, "empty revision"),
        ("hf://spaces/org/app", InvalidInputError, "Space"),
        (None, InvalidInputError, "for instance"),
    ],
)
def test_parse_hf_rejects(link, error, match):
    with pytest.raises(error, match=match):
        parse_hf(link)


def test_endpoint_and_token(monkeypatch):
    assert hf_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert hf_endpoint() == "https://hf-mirror.example"
    assert resolve_url("hf://datasets/o/n@v1/a b.csv").startswith(
        "https://hf-mirror.example/datasets/o/n/resolve/v1/a%20b.csv"
    )
    monkeypatch.setenv("HF_ENDPOINT", "hf-mirror.example")
    with pytest.raises(InvalidInputError, match="not an http"):
        hf_endpoint()
    assert hf_token() is None
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_old\n")
    assert hf_token() == "hf_old"
    monkeypatch.setenv("HF_TOKEN", " hf_new ")
    assert hf_token() == "hf_new"
    assert hf_token("hf_arg") == "hf_arg"
    assert hf_token(False) is None


# --------------------------------------------------------------------------- listing


def test_listing_follows_every_page_and_describes_each_file(hub):
    listed = dict(list_hf("hf://datasets/acme/speech"))
    assert sorted(listed) == sorted(SPEECH)
    pages = hub.requests_to("tree")
    assert len(pages) == 3  # 7 entries (files and folders), 3 a page
    assert [("cursor" in p.query) for p in pages] == [False, True, True]
    assert all(p.query["recursive"] == ["true"] for p in pages)
    train = listed["data/train/0.parquet"]
    assert (train.size, train.sha256, train.etag) == (300, sha256(TRAIN), f'"{sha256(TRAIN)}"')
    assert train.source == "hf://datasets/acme/speech@main/data/train/0.parquet"
    readme = listed["README.md"]
    assert readme.size == len(SPEECH["README.md"]) and readme.sha256 is None
    assert readme.etag and len(readme.etag) == 42  # the quoted git blob id


def test_listing_is_lazy_and_filters(hub):
    listing = list_hf("hf://datasets/acme/speech/data/", suffix=".parquet")
    assert hub.requests_to("tree") == []  # nothing asked before the first item is wanted
    assert [path for path, _ in listing] == ["data/train/0.parquet", "data/validation/0.parquet"]
    assert hub.requests_to("tree")[0].path.endswith("/tree/main/data")
    found = [p for p, _ in list_hf("hf://datasets/acme/speech", prefix="data/t")]
    assert found == ["data/train/0.parquet"]


def test_include_and_exclude(hub, tmp_path):
    paths = hf_download(
        "acme/speech", None, tmp_path, include="data/", exclude="*validation*", repo_type="dataset"
    )
    assert files_in(tmp_path) == ["data/meta.json", "data/train/0.parquet"]
    assert [os.path.relpath(p, tmp_path) for p in paths] == [
        os.path.join("data", "meta.json"),
        os.path.join("data", "train", "0.parquet"),
    ]
    picked = [p for p, _ in list_hf("hf://datasets/acme/speech", include=["*.md", "*.json"])]
    assert sorted(picked) == ["README.md", "data/meta.json"]
    with pytest.raises(InvalidInputError, match="glob pattern"):
        list_hf("hf://datasets/acme/speech", include=[""])


# --------------------------------------------------------------------------- downloads


def test_dataset_downloaded_with_folders_kept(hub, tmp_path):
    paths = hf_download("acme/speech", local_dir=tmp_path, repo_type="dataset")
    assert files_in(tmp_path) == sorted(SPEECH)
    for name, data in SPEECH.items():
        assert read(tmp_path / name) == data
    assert sorted(paths) == sorted(str(tmp_path / name) for name in SPEECH)
    # the two 0.parquet of different splits never collide
    assert read(tmp_path / "data/train/0.parquet") != read(tmp_path / "data/validation/0.parquet")
    blobs = {r.path for r in hub.storage.requests}
    assert blobs == {f"/lfs/{sha256(TRAIN)}", f"/lfs/{sha256(VALIDATION)}"}
    assert hub.requests_to("resolve") and all(r.method == "GET" for r in hub.requests_to("resolve"))


def test_a_model_by_default_with_the_hubs_keywords(hub, tmp_path):
    # as huggingface_hub.hf_hub_download: repo_type="model", revision "main", local_dir=
    path = hf_download(
        repo_id="acme/tiny-bert",
        filename="vocab.txt",
        subfolder="tokenizer",
        local_dir=tmp_path,
        token=False,
    )
    assert path == str(tmp_path / "tokenizer" / "vocab.txt")
    assert read(path) == MODEL["tokenizer/vocab.txt"]
    assert all("/datasets/" not in r.path for r in hub.requests)
    # a dataset is still reachable: by repo_type="dataset", and by its hf://datasets/ link
    one = hf_download("acme/speech", "README.md", tmp_path / "d", repo_type="dataset")
    assert read(one) == SPEECH["README.md"]
    assert (
        read(fetch_hf("hf://datasets/acme/speech/README.md", tmp_path / "e.md").path)
        == (SPEECH["README.md"])
    )
    with pytest.raises(
        requests.HTTPError, match="acme/speech.*a dataset needs repo_type='dataset'"
    ):
        hf_download("acme/speech", "README.md", tmp_path / "m")  # no such model


def test_the_old_keyword_local_dirpath_still_works_and_warns(hub, tmp_path):
    with pytest.warns(DeprecationWarning, match="local_dirpath.*use local_dir=") as caught:
        path = hf_download("acme/tiny-bert", "config.json", local_dirpath=tmp_path)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert read(path) == MODEL["config.json"] and path == str(tmp_path / "config.json")
    with pytest.raises(InvalidInputError, match="both given"), pytest.warns(DeprecationWarning):
        hf_download("acme/tiny-bert", "config.json", local_dir=tmp_path, local_dirpath=tmp_path)
    hf_download("acme/tiny-bert", "config.json", tmp_path, force_download=True)
    assert len([r for r in hub.requests_to("resolve") if r.method == "GET"]) == 2


def test_model_repository_and_one_file(hub, tmp_path):
    paths = hf_download("acme/tiny-bert", local_dir=tmp_path / "all", repo_type="model")
    assert files_in(tmp_path / "all") == sorted(MODEL)
    assert read(tmp_path / "all/model.safetensors") == WEIGHTS
    assert len(paths) == 3
    one = hf_download("acme/tiny-bert", "tokenizer/vocab.txt", tmp_path / "one", repo_type="model")
    assert one == str(tmp_path / "one" / "tokenizer" / "vocab.txt")
    assert read(one) == MODEL["tokenizer/vocab.txt"]
    fetched = fetch_hf("hf://acme/tiny-bert/config.json", "cfg.json")
    assert (fetched.path, fetched.skipped, read("cfg.json")) == (
        "cfg.json",
        False,
        MODEL["config.json"],
    )
    assert hub.requests_to("resolve")[-1].path == "/acme/tiny-bert/resolve/main/config.json"


def test_a_chosen_revision_is_honoured_everywhere(hub, tmp_path):
    hf_download("acme/speech", local_dir=tmp_path / "v1", revision="v1.0", repo_type="dataset")
    assert files_in(tmp_path / "v1") == sorted(SPEECH_V1)
    assert read(tmp_path / "v1/data/train/0.parquet") == OLD_TRAIN
    assert read(tmp_path / "v1/README.md") == SPEECH_V1["README.md"]
    assert {r.path.split("/")[6] for r in hub.requests_to("tree")} == {"v1.0"}
    assert all("/resolve/v1.0/" in r.path for r in hub.requests_to("resolve"))
    # a commit id, a link's @revision, and a revision with a '/' (sent encoded)
    by_commit = tmp_path / "commit" / "0.parquet"
    fetch_hf(f"hf://datasets/acme/speech@{hub.commits['v1.0']}/data/train/0.parquet", by_commit)
    assert read(by_commit) == OLD_TRAIN
    hf_download(
        "acme/speech", local_dir=tmp_path / "branch", revision="release/2024", repo_type="dataset"
    )
    assert files_in(tmp_path / "branch") == ["x/y.txt"]
    assert "/tree/release%2F2024" in hub.requests_to("tree")[-1].path
    with pytest.raises(requests.HTTPError, match="no such revision"):
        hf_download("acme/speech", local_dir=tmp_path / "none", revision="v9", repo_type="dataset")


def test_single_file_sends_a_head_only_when_the_listing_lacks_its_size(hub, tmp_path):
    link = "hf://datasets/acme/speech@main/data/train/0.parquet"
    attrs = stat_hf(link)
    assert (attrs.size, attrs.sha256, attrs.source) == (300, sha256(TRAIN), link)
    hub.clear_logs()
    fetch_hf(link, tmp_path / "a.parquet")
    # the HEAD's redirect already names the storage link: the GET goes straight there
    assert [r.method for r in hub.requests_to("resolve")] == ["HEAD"]
    assert [r.method for r in hub.storage.requests] == ["GET"]
    assert read(tmp_path / "a.parquet") == TRAIN
    listed = dict(list_hf("hf://datasets/acme/speech"))
    hub.clear_logs()
    fetch_hf(link, f"{tmp_path}/b/", TransferOptions(remote_attrs=listed["data/train/0.parquet"]))
    assert [r.method for r in hub.requests_to("resolve")] == ["GET"]
    assert read(tmp_path / "b/data/train/0.parquet") == TRAIN


def test_a_rerun_fetches_nothing_unchanged(hub, tmp_path):
    first = hf_download("acme/speech", local_dir=tmp_path, repo_type="dataset")
    hub.clear_logs()
    assert hf_download("acme/speech", local_dir=tmp_path, repo_type="dataset") == first
    assert hub.requests_to("resolve") == [] and hub.storage.requests == []
    with Manifest(tmp_path) as manifest:
        assert manifest.get("data/train/0.parquet").sha256 == sha256(TRAIN)
        assert manifest.get("README.md").source == "hf://datasets/acme/speech@main/README.md"
        fetched = [
            fetch_hf(attrs.source, tmp_path, TransferOptions(remote_attrs=attrs, manifest=manifest))
            for _, attrs in list_hf("hf://datasets/acme/speech")
        ]
    assert all(f.skipped for f in fetched)
    # a file changed on the hub is the only one fetched again
    hub.add_repo("acme/speech", {**SPEECH, "README.md": b"# speech, edited\n"})
    hub.clear_logs()
    hf_download("acme/speech", local_dir=tmp_path, repo_type="dataset")
    assert [r.path for r in hub.requests_to("resolve")] == [
        "/datasets/acme/speech/resolve/main/README.md"
    ]
    assert read(tmp_path / "README.md") == b"# speech, edited\n"


def test_a_corrupted_body_is_never_placed(hub, tmp_path):
    hub.corrupt(TRAIN)
    with pytest.raises(JobFailedError) as failed:
        hf_download("acme/speech", local_dir=tmp_path, repo_type="dataset")
    assert [name for name, _ in failed.value.errors] == ["data/train/0.parquet"]
    assert "ChecksumMismatchError" in failed.value.errors[0][1]
    assert files_in(tmp_path) == sorted(set(SPEECH) - {"data/train/0.parquet"})
    assert sorted(failed.value.paths) == sorted(str(tmp_path / n) for n in files_in(tmp_path))
    # alone, with no listing: the HEAD's X-Linked-Etag is the expected sha256
    with pytest.raises(ChecksumMismatchError):
        fetch_hf("hf://datasets/acme/speech/data/train/0.parquet", tmp_path / "alone.parquet")
    assert not os.path.exists(tmp_path / "alone.parquet")


def test_an_unsafe_path_fails_alone_and_nothing_lands_outside(hub, tmp_path):
    hub.add_repo("acme/evil", {"ok.txt": b"fine\n", "../escape.txt": b"out\n"})
    dest = tmp_path / "dest"
    with pytest.raises(JobFailedError) as failed:
        hf_download("acme/evil", local_dir=dest, repo_type="dataset")
    assert [name for name, _ in failed.value.errors] == ["../escape.txt"]
    assert "UnsafePathError" in failed.value.errors[0][1]
    assert files_in(tmp_path) == ["dest/ok.txt"]
    with pytest.raises(UnsafePathError):
        fetch_hf("hf://datasets/acme/evil@main/../escape.txt", dest)
    assert not any(r.path.endswith("escape.txt") for r in hub.requests_to("resolve"))


# --------------------------------------------------------------------------- auth


def test_the_token_reaches_the_hub_but_never_the_storage_host(hub, tmp_path):
    paths = hf_download(
        "acme/secret",
        None,
        tmp_path,
        repo_type="dataset",
        token=TOKEN,
        headers={"X-Trace": f"id {TOKEN}"},
    )
    assert files_in(tmp_path) == sorted(SECRET)
    assert len(paths) == 2
    assert hub.requests and all(
        r.headers.get("Authorization") == f"Bearer {TOKEN}" and r.headers.get("X-Trace")
        for r in hub.requests
    )
    assert hub.storage.requests  # data.bin came from the storage host...
    for request in hub.storage.requests:  # ...which saw neither the token nor headers=
        assert all(TOKEN not in value for value in request.headers.values())
        assert "Authorization" not in request.headers and "X-Trace" not in request.headers


def test_a_backslash_in_a_redirect_does_not_pass_another_host_for_the_hub(tmp_path):
    # http://other\@hub/...: urlsplit reads the hub after the '@', requests connects to the
    # host before the '\': the token must not go there.
    with LocalServer() as hub, LocalServer() as other:
        own = hub.url.split("://", 1)[1]
        hub.redirect("datasets/acme/x/resolve/main/a.bin", f"{other.url}\\@{own}/a.bin")
        with pytest.raises(requests.HTTPError):  # the other host has no such file
            hf_download(
                "acme/x", "a.bin", tmp_path, repo_type="dataset", endpoint=hub.url, token=TOKEN
            )
        assert hub.requests[0].headers.get("Authorization") == f"Bearer {TOKEN}"
        assert other.requests, "the redirect was not followed to the other host"
        for request in other.requests:
            assert all(TOKEN not in value for value in request.headers.values())


def test_hf_token_from_the_environment(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    path = fetch_hf("hf://datasets/acme/secret/data.bin", tmp_path).path
    assert read(path) == SECRET["data.bin"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in hub.requests)
    assert not any("Authorization" in r.headers for r in hub.storage.requests)


def test_a_private_repository_without_a_token_says_one_is_needed(hub, tmp_path):
    with pytest.raises(HfAuthError, match="needs a token with access to the dataset acme/secret"):
        hf_download("acme/secret", local_dir=tmp_path, repo_type="dataset")
    with pytest.raises(HfAuthError, match="no token was sent. Pass token='hf_...' or set HF_TOKEN"):
        fetch_hf("hf://datasets/acme/secret/notes.txt", tmp_path)
    with pytest.raises(requests.HTTPError) as refused:  # still what requests users catch
        hf_download(
            "acme/secret", "notes.txt", tmp_path, token="hf_wrong_token", repo_type="dataset"
        )
    assert isinstance(refused.value, DownloadError) and refused.value.response.status_code == 401
    assert "the token given was refused" in str(refused.value)
    assert "hf_wrong_token" not in str(refused.value)
    assert files_in(tmp_path) == []


def test_a_gated_repository_says_to_accept_its_conditions(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(HfAuthError) as refused:
        list(list_hf("hf://acme/gated"))
    message = str(refused.value)
    assert refused.value.response.status_code == 403 and "HF_TOKEN was refused" in message
    assert f"accept its conditions at {hub.url}/acme/gated" in message
    assert "hf_not_granted" not in message
    assert len(list(list_hf("hf://acme/gated", token=GATED_TOKEN))) == 3


def test_a_renamed_repository_keeps_the_token_on_the_hub_only(hub, tmp_path):
    hub.rename("acme/secret", "acme/secret-v2")
    path = fetch_hf(
        "hf://datasets/acme/secret/data.bin", tmp_path, TransferOptions(token=TOKEN)
    ).path
    assert read(path) == SECRET["data.bin"]
    moved = [r for r in hub.requests if "secret-v2" in r.path]
    assert moved and all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in moved)
    assert not any("Authorization" in r.headers for r in hub.storage.requests)


def test_an_expired_storage_link_is_asked_for_again(hub, tmp_path):
    blob = f"lfs/{sha256(TRAIN)}"
    hub.storage.add_fault(blob, status(403))  # the link the HEAD gave has expired
    fetch_hf("hf://datasets/acme/speech/data/train/0.parquet", tmp_path)
    assert [r.method for r in hub.requests_to("resolve")] == ["HEAD", "GET"]
    assert read(tmp_path / "data/train/0.parquet") == TRAIN
    hub.storage.add_fault(blob, status(403))
    hub.storage.add_fault(blob, status(403))
    with pytest.raises(requests.HTTPError) as refused:  # the storage refused, not the hub
        fetch_hf(
            "hf://datasets/acme/speech/data/train/0.parquet",
            tmp_path / "x",
            TransferOptions(cache=False),
        )
    assert not isinstance(refused.value, HfAuthError)


def test_segments_go_straight_to_the_storage_host(hub, tmp_path, monkeypatch, tune):
    tune(min_segment_size=64)
    listed = dict(list_hf("hf://acme/tiny-bert", token=TOKEN))
    hub.clear_logs()
    fetched = fetch_hf(
        "hf://acme/tiny-bert/model.safetensors",
        tmp_path,
        TransferOptions(
            remote_attrs=listed["model.safetensors"], token=TOKEN, segments=4, segment_threshold=128
        ),
    )
    assert read(fetched.path) == WEIGHTS
    ranged = [r for r in hub.storage.requests if r.range]
    assert len(ranged) >= 2  # fetched in parallel ranges...
    assert len(hub.requests_to("resolve")) == 1  # ...after asking the hub once
    assert not any("Authorization" in r.headers for r in hub.storage.requests)


# --------------------------------------------------------------------------- parquet


def test_parquet_export_keeps_config_and_split_folders(hub, tmp_path):
    listed = dict(list_hf("hf://datasets/acme/speech", parquet=True))
    assert sorted(listed) == sorted(set(EXPORT) - {".gitattributes"})
    assert hub.requests_to("parquet")[0].path == "/api/datasets/acme/speech/parquet"
    assert all("/tree/refs%2Fconvert%2Fparquet" in r.path for r in hub.requests_to("tree"))
    attrs = listed["default/train/0000.parquet"]
    assert attrs.sha256 == sha256(EXPORT["default/train/0000.parquet"])
    assert attrs.source == (
        "hf://datasets/acme/speech@refs/convert/parquet/default/train/0000.parquet"
    )
    paths = hf_download(
        "acme/speech", local_dir=tmp_path, parquet=True, include="default/", repo_type="dataset"
    )
    assert files_in(tmp_path) == ["default/train/0000.parquet", "default/validation/0000.parquet"]
    assert len(paths) == 2
    for name in files_in(tmp_path):
        assert read(tmp_path / name) == EXPORT[name]
    assert all("/resolve/refs%2Fconvert%2Fparquet/" in r.path for r in hub.requests_to("resolve"))


def test_parquet_needs_a_dataset_and_its_export_revision(hub):
    with pytest.raises(InvalidInputError, match="exports the default branch only"):
        list_hf("hf://datasets/acme/speech@v1.0", parquet=True)
    with pytest.raises(InvalidInputError, match="is a model"):
        list_hf("hf://acme/tiny-bert", parquet=True)
    with pytest.raises(requests.HTTPError, match="404"):
        list(list_hf("hf://datasets/acme/secret", parquet=True, token=TOKEN))


def test_arguments_are_checked_before_any_request(hub, tmp_path):
    with pytest.raises(InvalidInputError, match="names no file"):
        fetch_hf("hf://datasets/acme/speech@main/data/", tmp_path)
    with pytest.raises(InvalidInputError, match="repo_type 'space'"):
        hf_download("acme/speech", repo_type="space")
    with pytest.raises(InvalidInputError, match="give filename="):
        hf_download("acme/speech", checksum="sha256:" + "0" * 64, repo_type="dataset")
    with pytest.raises(InvalidInputError, match="leave them out"):
        hf_download("acme/speech", "README.md", include="*.md", repo_type="dataset")
    with pytest.raises(InvalidInputError, match="token of type int"):
        hf_download("acme/speech", "README.md", token=123, repo_type="dataset")
    assert hub.requests == []


def test_a_given_checksum_holds_for_a_file_changed_behind_its_record(hub, tmp_path):
    link = "hf://datasets/acme/speech/data/train/0.parquet"
    path = fetch_hf(link, tmp_path / "t.parquet").path
    stat = os.stat(path)
    with open(path, "r+b") as fh:
        fh.write(b"X")  # same size and time: the record still says it is current
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fetch_hf(link, tmp_path / "t.parquet").skipped
    with pytest.warns(CacheMismatchWarning, match="sha256"):
        fetched = fetch_hf(
            link, tmp_path / "t.parquet", TransferOptions(checksum="sha256:" + sha256(TRAIN))
        )
    assert not fetched.skipped and read(path) == TRAIN


def test_cache_verified_keeps_an_lfs_file_with_no_request(hub, tmp_path):
    link = "hf://datasets/acme/speech@main/data/train/0.parquet"
    assert not fetch_hf(link, tmp_path / "a.parquet", TransferOptions(cache="verified")).skipped
    with Manifest(tmp_path) as manifest:  # the Hub's sha256, checked against the bytes
        assert manifest.get("a.parquet").verified == "sha256"
    hub.clear_logs()
    assert fetch_hf(link, tmp_path / "a.parquet", TransferOptions(cache="verified")).skipped
    assert hub.requests == [] and hub.storage.requests == []
    assert sha256(read(tmp_path / "a.parquet")) == sha256(TRAIN)
