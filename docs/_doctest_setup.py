"""Local servers and small generated data for the documentation's examples.

One setup for both ways the examples run:

* pytest (``python -m pytest`` collects ``docs/*.rst``): ``docs/conftest.py`` calls
  :func:`start` before each page and :func:`stop` after it, and puts the namespace into
  ``doctest_namespace``; :func:`shutdown` ends the session.
* Sphinx (``sphinx-build -b doctest docs docs/_build/doctest``): ``doctest_global_setup``
  in ``conf.py`` calls :func:`start` for each page and ``doctest_global_cleanup`` calls
  :func:`stop`; what is still running at exit is stopped by :mod:`atexit`.

Every page gets fresh servers on 127.0.0.1 holding the same data, fresh environment
variables pointing dlutils at them, and a new empty temporary folder as the current
folder, so the examples write their files there and show real, stable output.

The stand-ins are the test suite's own (``tests/servers_*.py``): the docs run against the
same local fixtures as the tests.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

#: Variables a page sets; their previous values come back when the page ends.
ENV_NAMES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "STORAGE_EMULATOR_HOST",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "DLUTILS_HOME",
)


def blob(n: int, seed: int) -> bytes:
    """``n`` pseudo-random bytes, the same on every run."""
    return random.Random(seed).randbytes(n)


def files(folder: str | os.PathLike = ".") -> list[str]:
    """Every file under ``folder``, relative, ``/``-separated and sorted (manifest left out)."""
    return sorted(
        os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
        for root, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".dlutils-manifest")
    )


# ----------------------------------------------------------------------------- the data

TABLE = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(100))
WEB_FILES = {
    "data/table.csv": TABLE,
    **{f"shards/shard-{i:04d}.tar": blob(4096, i) for i in range(20)},
    "models/model.bin": blob(4 << 20, 100),
}
S3_BUCKET = "demo"
S3_FILES = {
    **{f"train/shard-{i:04d}.tar": blob(2048, 200 + i) for i in range(5)},
    "val/shard-0000.tar": blob(2048, 300),
    "README.txt": b"A small bucket for the dlutils documentation.\n",
}
GCS_BUCKET = "demo"
GCS_FILES = {
    "tables/2024.csv": TABLE[:500],
    "tables/2025.csv": TABLE[500:],
    "notes.txt": b"Tables by year.\n",
}
AIS_BUCKET = "imagenet"
AIS_FILES = {f"train-{i:04d}.tgz": blob(1024, 400 + i) for i in range(10)}
HF_DATASET = "demo/tiny"
HF_FILES = {
    "README.md": b"# tiny\n",
    "data/train.csv": TABLE[:600],
    "data/validation.csv": TABLE[600:],
}
HF_PARQUET = {
    "default/train/0000.parquet": blob(300, 500),
    "default/validation/0000.parquet": blob(120, 501),
}
HF_MODEL = "demo/tiny-model"
HF_MODEL_FILES = {"config.json": b'{"hidden_size": 8}\n', "model.safetensors": blob(4096, 600)}


# ----------------------------------------------------------------------------- servers

_moto: Any = None  # one ThreadedMotoServer per process: moto's state is per process anyway
_page: dict[str, Any] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_moto() -> str:
    global _moto
    if _moto is None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        _moto.start()
    host, port = _moto.get_host_and_port()
    return f"http://{host}:{port}"


def _fill_bucket(url: str) -> None:
    """Make bucket ``demo`` hold exactly :data:`S3_FILES`."""
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=url)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if S3_BUCKET in existing:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
    else:
        client.create_bucket(Bucket=S3_BUCKET)
    for key, data in S3_FILES.items():
        client.put_object(Bucket=S3_BUCKET, Key=key, Body=data)


def _start_gcs() -> tuple[subprocess.Popen, str]:
    import requests

    port = _free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start"]
    command += ["--host=127.0.0.1", f"--port={port}", "--in-memory"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{endpoint}/storage/v1/b", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"gcp-storage-emulator did not start on {endpoint}")
        time.sleep(0.05)
    requests.post(f"{endpoint}/storage/v1/b", json={"name": GCS_BUCKET}, timeout=10)
    from servers_gcs import upload

    for name, data in GCS_FILES.items():
        upload(endpoint, GCS_BUCKET, name, data)
    return process, endpoint


def start() -> dict[str, Any]:
    """Start one page's servers, point dlutils at them, enter a new temporary folder.

    Returns the names the page's examples use: ``server`` (a
    :class:`~dlutils.localserver.LocalServer` with ``data/table.csv``,
    ``shards/shard-0000.tar`` .. ``shard-0019.tar`` and ``models/model.bin``), ``hub``
    (the HuggingFace stand-in), ``cluster`` (the AIStore stand-in), ``files`` (lists the
    files under a folder) and ``workdir`` (the temporary folder).
    """
    if _page:
        stop()
    from servers_ais import AisStandIn
    from servers_hf import PARQUET_REVISION, HubStandIn

    from dlutils.localserver import LocalServer

    saved = {name: os.environ.get(name) for name in ENV_NAMES}
    workdir = tempfile.mkdtemp(prefix="dlutils-docs-")
    import dlutils

    jobs = {job.id for job in dlutils.list_jobs()}
    _page.update(env=saved, cwd=os.getcwd(), workdir=workdir, stack=[], jobs=jobs)
    try:
        server = LocalServer(WEB_FILES).start()
        _page["stack"].append(server.stop)

        hub = HubStandIn(page_size=50).__enter__()
        _page["stack"].append(lambda: hub.__exit__(None, None, None))
        hub.add_repo(HF_DATASET, HF_FILES)
        hub.add_repo(HF_DATASET, {"README.md": HF_FILES["README.md"]}, revision="v0.1")
        hub.add_repo(HF_DATASET, HF_PARQUET, revision=PARQUET_REVISION)
        hub.add_repo(HF_MODEL, HF_MODEL_FILES, repo_type="model")

        cluster = AisStandIn().__enter__()
        _page["stack"].append(lambda: cluster.__exit__(None, None, None))
        cluster.create_bucket(AIS_BUCKET)
        for name, data in AIS_FILES.items():
            cluster.put(AIS_BUCKET, name, data, checksum="md5")

        gcs_process, gcs_endpoint = _start_gcs()
        _page["stack"].append(lambda: (gcs_process.terminate(), gcs_process.wait(10)))

        s3_url = _start_moto()
        aws_dir = os.path.join(workdir, ".aws")  # fake keys only, never the user's files
        os.mkdir(aws_dir)
        with open(os.path.join(aws_dir, "credentials"), "w") as f:
            f.write("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
        with open(os.path.join(aws_dir, "config"), "w") as f:
            f.write("[default]\nregion = us-east-1\n")
        for name in ENV_NAMES:
            os.environ.pop(name, None)
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=s3_url,
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(aws_dir, "credentials"),
            AWS_CONFIG_FILE=os.path.join(aws_dir, "config"),
            AWS_EC2_METADATA_DISABLED="true",
            STORAGE_EMULATOR_HOST=gcs_endpoint,
            HF_ENDPOINT=hub.url,
            DLUTILS_HOME=os.path.join(workdir, ".dlutils-home"),
        )
        _fill_bucket(s3_url)
        os.chdir(workdir)
    except BaseException:
        stop()
        raise
    return {
        "server": server,
        "hub": hub,
        "cluster": cluster,
        "files": files,
        "workdir": workdir,
        "docs_dir": HERE,  # the docs folder itself, wherever dlutils is installed
    }


def stop() -> None:
    """End a page: stop its servers, restore the environment and the current folder."""
    if not _page:
        return
    try:
        import dlutils

        mine = [job for job in dlutils.list_jobs() if job.id not in _page["jobs"]]
        for job in mine:  # a page never leaves a job running, nor one in the registry
            job.abort()
            if job.status().state.value != "pending":
                job.wait(30)
            dlutils.remove_job(job.id)
        for stop_one in reversed(_page["stack"]):
            stop_one()
    finally:
        os.chdir(_page["cwd"])
        for name, value in _page["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(_page["workdir"], ignore_errors=True)
        _page.clear()


def shutdown() -> None:
    """Stop everything, the process-wide S3 server included."""
    global _moto
    stop()
    if _moto is not None:
        _moto.stop()
        _moto = None


atexit.register(shutdown)
