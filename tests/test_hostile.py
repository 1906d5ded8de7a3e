"""Hostile names and planted symlinks, for every source: 0 writes outside the destination.

Every test builds a :class:`Scene`: a root folder holding the destination ``dest/``, an
``outside/`` folder of victims, ``$HOME`` and the current folder. The whole root but
``dest/`` is snapshotted (sha256 of every file, target of every link) before and after
the download; absolute names point at a path outside the root, checked the same way.
Then: the hostile names are per-object errors (a job may also refuse a whole request,
before any transfer), the good names are done, byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from urllib.parse import quote

import pytest
from servers_gcs import fake_gcs_fixture  # noqa: F401 - fixture
from servers_s3 import moto_server_fixture, s3_fixture  # noqa: F401 - fixtures

import dlutils
from dlutils import Job
from dlutils.localserver import LocalServer
from dlutils.names import BACKSLASH_SEPARATES
from dlutils.sandbox.aistore import AisStandIn
from dlutils.sandbox.hf_hub import HubStandIn

#: Written at an absolute name by a download that obeys '/...' names: never created.
ABSOLUTE = f"/tmp/dlutils-hostile-{os.getpid()}"
LONG = "L" * 300 + ".bin"  # longer than NAME_MAX (255)
MANIFEST = ".dlutils-manifest.sqlite"

#: Names that must never be used as given: each one is an error for its object (the long
#: one may instead be saved whole under a shorter name inside the destination).
#: Traversal on Windows; on POSIX a bucket key's backslash is part of the file's name.
BACKSLASHED = "a\\..\\..\\x"
#: The sources whose names are a bucket's keys.
BUCKET_LISTINGS = {"s3 key", "gcs name", "ais listing"}
HOSTILE = [
    "../x",
    ABSOLUTE,
    "a/../../x",
    "~/x",
    "C:\\x",
    BACKSLASHED,
    "n\x00ul.bin",
    LONG,
    MANIFEST,
    "sub/x.bin",  # dest/sub is a planted link to outside/
]
#: Names that may be downloaded (inside the destination) or refused, but never corrupt
#: another file: "p.bin.part" is the working file of "p.bin" (and, in the symlink tests,
#: dest/p.bin.part is a planted link to a victim outside).
TOUCHY = ["p.bin", "p.bin.part"]
GOOD = ["good.bin", "deep/good2.bin"]

CASES: list[str] = []  # "source: name" of every case tried, counted at the end


def short(name: str) -> str:
    """A test id: the name's repr, the long one abbreviated."""
    return (
        repr(name) if len(name) < 40 else f"'L'*{len(name) - 4}+'.bin'"
    )  # (source: name) of every case tried, counted at the end


def data_for(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest() * 40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Scene:
    def __init__(self, tmp_path, monkeypatch, *, links: tuple[str, ...] = ("sub",)):
        self.root = root = tmp_path / "scene"
        root.mkdir()
        self.dest = root / "dest"
        self.outside = root / "outside"
        for folder in (self.dest, self.outside, root / "home", root / "cwd"):
            folder.mkdir()
        (self.outside / "victim.bin").write_bytes(b"victim: must stay as it is\n")
        (self.outside / "x.bin").write_bytes(b"an outside file named like an object\n")
        conn = sqlite3.connect(self.outside / "victim.sqlite")
        conn.execute("CREATE TABLE t (v)")
        conn.commit()
        conn.close()
        planted = {
            "sub": (self.outside, self.dest / "sub"),
            "part": (self.outside / "victim.bin", self.dest / "p.bin.part"),
            "manifest": (self.outside / "victim.sqlite", self.dest / MANIFEST),
        }
        for link in links:
            os.symlink(*planted[link])
        monkeypatch.setenv("HOME", str(root / "home"))
        monkeypatch.chdir(root / "cwd")
        assert not os.path.lexists(ABSOLUTE)
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, str]:
        seen = {}
        for top, dirs, names in os.walk(self.root):
            if os.path.samefile(top, self.dest):
                dirs[:] = []
                continue
            for name in dirs + names:
                full = os.path.join(top, name)
                rel = os.path.relpath(full, self.root)
                if os.path.islink(full):
                    seen[rel] = "link -> " + os.readlink(full)
                elif os.path.isfile(full):
                    with open(full, "rb") as fh:
                        seen[rel] = sha(fh.read())
                else:
                    seen[rel] = "folder"
        return seen

    def check_outside(self) -> None:
        assert self.snapshot() == self.before, "something outside the destination changed"
        assert not os.path.lexists(ABSOLUTE), f"{ABSOLUTE} was written"

    def placed_anywhere(self, data: bytes) -> bool:
        """Whether a regular file in the destination holds ``data``."""
        for top, _, names in os.walk(self.dest):
            for name in names:
                full = os.path.join(top, name)
                if not os.path.islink(full) and sha(open(full, "rb").read()) == sha(data):
                    return True
        return False

    def check(self, status, objects: dict[str, bytes], source: str, *, strict: bool = True) -> None:
        """Per-object outcome: hostile names failed, good ones placed, nothing corrupt.

        ``strict=False``: the good ones may fail too (a destination dlutils refuses).
        """
        self.check_outside()
        failed = {name for name, _ in status.download_errors}
        if (
            not strict and "<manifest>" in failed
        ):  # the whole destination refused, before any request
            for name in objects:
                CASES.append(f"{source}: {name!r}")
                assert not os.path.lexists(self.dest / name), f"{source}: {name!r} placed anyway"
            return
        for name in objects:
            CASES.append(f"{source}: {name!r}")
            path = self.dest / name
            if name == LONG and name not in failed:  # or saved whole under a shorter name
                assert self.placed_anywhere(objects[name]), f"{source}: {name!r} is lost"
            elif name == BACKSLASHED and source in BUCKET_LISTINGS and not BACKSLASH_SEPARATES:
                # A bucket key's backslash is part of its name on POSIX (as aws s3 sync
                # keeps it): one file, inside the destination, named as the key.
                assert name not in failed, status.download_errors
                assert sha(path.read_bytes()) == sha(objects[name]), name
            elif name in HOSTILE:
                assert name in failed, f"{source}: hostile name {name!r} was not an error"
            elif name in GOOD and (strict or name not in failed):
                assert name not in failed, status.download_errors
                assert sha(path.read_bytes()) == sha(objects[name]), name
            elif name not in failed:  # TOUCHY, or GOOD in a refused destination
                assert not path.is_symlink() and sha(path.read_bytes()) == sha(objects[name])
        manifest = self.dest / MANIFEST
        if os.path.exists(manifest) and not os.path.islink(manifest):
            conn = sqlite3.connect(manifest)
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            conn.close()


def all_names() -> list[str]:
    return GOOD + TOUCHY + HOSTILE  # a good one first: a range job checks its first name early


@pytest.fixture(autouse=True)
def report_cases():
    yield
    if CASES:
        print(f"\nhostile-name cases tried so far: {len(CASES)}")


# ------------------------------------------------------------------------------- http


def served(server: LocalServer, names: list[str]) -> dict[str, str]:
    """Put every name on the server (as one path element, '/' and '\\' escaped in the
    link); return name -> link."""
    links = {}
    for name in names:
        server.put("d/" + name, data_for(name))
        links[name] = f"{server.url}/d/{quote(name, safe='')}"
    return links


@pytest.mark.parametrize("bad", HOSTILE, ids=short)
def test_http_url_names_alone(tmp_path, monkeypatch, bad):
    """The pure function: an unsafe name derived from the link is an error, nothing written."""
    scene = Scene(tmp_path, monkeypatch)
    with LocalServer() as server:
        links = served(server, [bad])
        if bad == LONG:
            try:
                path = dlutils.http_download(links[bad], str(scene.dest))
            except dlutils.DownloadError:
                pass
            else:
                assert sha(open(path, "rb").read()) == sha(data_for(bad))
        else:
            with pytest.raises(dlutils.DownloadError):
                dlutils.http_download(links[bad], str(scene.dest))
    scene.check_outside()
    CASES.append(f"url name (http_download): {bad!r}")


@pytest.mark.parametrize("bad", HOSTILE, ids=short)
def test_content_disposition_names(tmp_path, monkeypatch, bad):
    """A hostile Content-Disposition is ignored (the link's name is used) or an error."""
    scene = Scene(tmp_path, monkeypatch)
    data = data_for(bad)
    header = f"attachment; filename*=UTF-8''{quote(bad, safe='')}"
    with LocalServer() as server:
        server.put("d/cd.bin", data, headers={"Content-Disposition": header})
        try:
            path = dlutils.http_download(server.url + "/d/cd.bin", str(scene.dest))
        except dlutils.DownloadError:
            path = None
    scene.check_outside()
    if path is not None:
        assert os.path.commonpath([os.path.realpath(path), str(scene.dest)]) == str(scene.dest)
        assert os.path.basename(path) not in (MANIFEST, "p.bin.part")
        assert sha(open(path, "rb").read()) == sha(data)
    CASES.append(f"Content-Disposition: {bad!r}")


@pytest.mark.parametrize("bad", HOSTILE + ["p.bin.part"], ids=short)
def test_multi_name_maps(tmp_path, monkeypatch, bad):
    """{name: link}: the hostile name is refused (the whole request, or that object)."""
    scene = Scene(tmp_path, monkeypatch)
    with LocalServer() as server:
        links = served(server, [bad, "good.bin"])
        objects = {bad: links[bad], "good.bin": links["good.bin"]}
        try:
            job = Job.multi(objects, scene.dest, retries=0)
        except dlutils.DownloadError:
            scene.check_outside()
            assert os.listdir(scene.dest) == ["sub"]
            CASES.append(f"multi map (request refused): {bad!r}")
            return
        status = job.start().wait(60)
    scene.check(status, {bad: data_for(bad), "good.bin": data_for("good.bin")}, "multi map")


@pytest.mark.parametrize("bad", ["../x", "a/../x", "/abs", "~/x", "C:\\x", "s\x00"], ids=short)
def test_range_template_subdir(tmp_path, monkeypatch, bad):
    scene = Scene(tmp_path, monkeypatch)
    with LocalServer({"d/a0.bin": b"0", "d/a1.bin": b"1"}) as server:
        with pytest.raises(dlutils.DownloadError, match="subdir"):
            Job.range(server.url + "/d/a{0..1}.bin", scene.dest, subdir=bad)
    scene.check_outside()
    CASES.append(f"range subdir: {bad!r}")


# ------------------------------------------------------------------------------- job sources

#: Names a bucket or hub can hold (S3, GCS and hub paths cannot hold NUL).
BUCKET_NAMES = [n for n in all_names() if "\x00" not in n]


def run_range(scene, request, names):
    with LocalServer() as server:
        served(server, names)
        choices = ",".join(quote(n, safe="") for n in names)
        return Job.range(f"{server.url}/d/{{{choices}}}", scene.dest).start().wait(60)


def run_s3(scene, request, names):
    bucket = request.getfixturevalue("s3")
    bucket.put_many({name: data_for(name) for name in names})
    return Job.backend(bucket.uri(), scene.dest, retries=0).start().wait(120)


def run_gcs(scene, request, names):
    fake = request.getfixturevalue("fake_gcs")
    for name in names:
        fake.put(name, data_for(name))
    return Job.backend(fake.uri(), scene.dest, retries=0).start().wait(120)


def run_ais(scene, request, names):
    with AisStandIn(page_size=5) as cluster:
        for name in names:
            cluster.put("data", name, data_for(name), checksum="md5")
        return Job.backend(cluster.link("data"), scene.dest, retries=0).start().wait(120)


def run_hf(scene, request, names):
    monkeypatch = request.getfixturevalue("monkeypatch")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with HubStandIn(page_size=4, lfs_threshold=64) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.add_repo("acme/evil", {n: data_for(n) for n in names})
        return Job.hf(scene.dest, dataset="acme/evil", retries=0).start().wait(120)


#: source -> (how to run a job over names, the names it can carry)
SOURCES = {
    "url name (range)": (run_range, all_names()),
    "s3 key": (run_s3, BUCKET_NAMES),
    "gcs name": (run_gcs, BUCKET_NAMES),
    "ais listing": (run_ais, all_names()),
    "hf path": (run_hf, BUCKET_NAMES),
}


#: The names of each source, in groups that fail for different reasons.
GROUPS = {
    "traversal": [n for n in HOSTILE if n not in (LONG, MANIFEST)],
    "long": [LONG],
    "dlutils-files": [MANIFEST, *TOUCHY],
}


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("source", list(SOURCES))
def test_hostile_names_of_each_source(tmp_path, monkeypatch, request, source, group):
    scene = Scene(tmp_path, monkeypatch)
    run, names = SOURCES[source]
    names = GOOD + [n for n in GROUPS[group] if n in names]
    status = run(scene, request, names)
    scene.check(status, {n: data_for(n) for n in names}, source)


@pytest.mark.parametrize("link", ["part", "manifest"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_planted_symlinks_of_each_source(tmp_path, monkeypatch, request, source, link):
    """dest/p.bin.part or dest/.dlutils-manifest.sqlite links to a victim outside."""
    scene = Scene(tmp_path, monkeypatch, links=("sub", link))
    run, _ = SOURCES[source]
    names = ["good.bin", "p.bin"]
    status = run(scene, request, names)
    # A planted manifest link may make dlutils refuse the whole destination.
    what = f"{source}, planted {link} link"
    scene.check(status, {n: data_for(n) for n in names}, what, strict=link != "manifest")


@pytest.mark.parametrize("link", ["part", "manifest"])
def test_planted_symlinks_http_download(tmp_path, monkeypatch, link):
    scene = Scene(tmp_path, monkeypatch, links=("sub", link))
    with LocalServer() as server:
        links = served(server, ["p.bin"])
        try:
            path = dlutils.http_download(links["p.bin"], str(scene.dest))
        except dlutils.DownloadError:
            path = None
    scene.check_outside()
    if path is not None:
        assert not os.path.islink(path) and sha(open(path, "rb").read()) == sha(data_for("p.bin"))
    CASES.append(f"http_download, planted {link} link")


# ------------------------------------------------------------------------------- the CLI


def test_cli_object_list_and_template(tmp_path, monkeypatch):
    scene = Scene(tmp_path, monkeypatch)
    names = all_names()
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["DLUTILS_HOME"] = str(tmp_path / "state")
    root = os.path.dirname(os.path.dirname(os.path.abspath(dlutils.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    listing = tmp_path / "objects.json"
    listing.write_text(json.dumps(names))
    with LocalServer() as server:
        served(server, names)
        runs = [
            ["--object-list", str(listing), f"{server.url}/d/"],
            [f"{server.url}/d/{{{','.join(quote(n, safe='') for n in names)}}}"],
        ]
        for args in runs:
            cmd = [sys.executable, "-m", "dlutils", "download", *args[-1:], str(scene.dest)]
            cmd += [*args[:-1], "--wait"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            scene.check_outside()
            if proc.returncode == 2:  # the whole request refused, before any transfer
                assert "dlutils: error: " in proc.stderr and os.listdir(scene.dest) == ["sub"]
            else:  # per-object errors, each one listed by name
                assert proc.returncode == 1, proc.stdout + proc.stderr
                unlisted = [n for n in HOSTILE if f"\t{n}: " not in proc.stderr]
                if LONG in unlisted and scene.placed_anywhere(data_for(LONG)):
                    unlisted.remove(LONG)
                assert not unlisted, f"hostile names not reported as errors: {unlisted}"
            for name in GOOD + TOUCHY:
                path = scene.dest / name
                if path.exists() and not path.is_symlink():
                    assert sha(path.read_bytes()) == sha(data_for(name))
            CASES.extend(f"cli {args[0][:14]}: {n!r}" for n in names)


def test_count_of_cases():
    """Run last in this module: the number of cases tried, for the record."""
    print(f"\nhostile-name cases tried: {len(CASES)}")
