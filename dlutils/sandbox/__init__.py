"""Local stand-ins of the services dlutils reads, holding a small generated dataset.

Everything here runs on 127.0.0.1 and needs no account and no internet: the examples of
the documentation start what they use with one call each, and so can you::

    >>> from dlutils import sandbox
    >>> server = sandbox.web_server()      # a LocalServer: data/table.csv, shards/, models/
    >>> server.url                                                      # doctest: +ELLIPSIS
    'http://127.0.0.1:...'
    >>> sandbox.stop_all()

:func:`web_server` (a :class:`~dlutils.localserver.LocalServer`), :func:`hub` (the
HuggingFace Hub, through ``HF_ENDPOINT``) and :func:`cluster` (an AIStore gateway) need
nothing beyond dlutils; :func:`s3` (moto's server, through ``AWS_ENDPOINT_URL``) and
:func:`gcs` (``gcp-storage-emulator``, through ``STORAGE_EMULATOR_HOST``) need
``pip install "dlutils-download[test]"``. The functions that point dlutils at a stand-in
set those environment variables in this process; :func:`stop_all` stops what was started
and puts the variables back.
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
import threading
import time
from collections.abc import Callable
from typing import Any

from ..localserver import LocalServer

__all__ = [
    "web_server",
    "hub",
    "cluster",
    "s3",
    "gcs",
    "files",
    "stop_all",
    "demo_files",
    "WEB_FILES",
    "S3_FILES",
    "GCS_FILES",
    "AIS_FILES",
    "HF_FILES",
    "HF_MODEL_FILES",
]

_INSTALL = 'pip install "dlutils-download[test]"'


def blob(n: int, seed: int) -> bytes:
    """``n`` pseudo-random bytes, the same on every run."""
    return random.Random(seed).randbytes(n)


#: A table of 100 squares (753 bytes).
TABLE = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(100))
#: What :func:`web_server` serves.
WEB_FILES = {
    "data/table.csv": TABLE,
    **{f"shards/shard-{i:04d}.tar": blob(4096, i) for i in range(20)},
    "models/model.bin": blob(4 << 20, 100),
}
S3_BUCKET = "demo"
#: What bucket ``demo`` holds in :func:`s3`.
S3_FILES = {
    **{f"train/shard-{i:04d}.tar": blob(2048, 200 + i) for i in range(5)},
    "val/shard-0000.tar": blob(2048, 300),
    "README.txt": b"A small bucket for the dlutils documentation.\n",
}
GCS_BUCKET = "demo"
#: What bucket ``demo`` holds in :func:`gcs`.
GCS_FILES = {
    "tables/2024.csv": TABLE[:500],
    "tables/2025.csv": TABLE[500:],
    "notes.txt": b"Tables by year.\n",
}
AIS_BUCKET = "imagenet"
#: What bucket ``imagenet`` holds in :func:`cluster`.
AIS_FILES = {f"train-{i:04d}.tgz": blob(1024, 400 + i) for i in range(10)}
HF_DATASET = "demo/tiny"
#: The dataset ``demo/tiny`` of :func:`hub` (tag ``v0.1`` holds its README only).
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
#: The model ``demo/tiny-model`` of :func:`hub`.
HF_MODEL_FILES = {"config.json": b'{"hidden_size": 8}\n', "model.safetensors": blob(4096, 600)}

_lock = threading.Lock()
_stops: list[Callable[[], Any]] = []  # what stop_all undoes, in order of start
_saved_env: dict[str, str | None] = {}  # the value each variable had before we set it
_moto: Any = None  # one server per process: moto keeps its state per process anyway


def demo_files() -> dict[str, bytes]:
    """The files :func:`web_server` serves: ``data/table.csv`` (753 bytes),
    ``shards/shard-0000.tar`` .. ``shard-0019.tar`` (4 KiB each), ``models/model.bin``
    (4 MiB); the same bytes on every run.

    Examples
    --------
    >>> from dlutils.sandbox import demo_files
    >>> len(demo_files()), len(demo_files()["data/table.csv"])
    (22, 753)
    """
    return dict(WEB_FILES)


def files(folder: str | os.PathLike = ".") -> list[str]:
    """Every file under ``folder``: relative, ``/``-separated, sorted; manifests and a
    cluster job's records (``.dlutils-records/``) left out.

    Examples
    --------
    >>> from dlutils.sandbox import files
    >>> files("no/such/folder")
    []
    """
    return sorted(
        os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
        for root, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".dlutils-manifest")
        and ".dlutils-records" not in os.path.relpath(root, folder).split(os.sep)
    )


def _on_stop(undo: Callable[[], Any]) -> None:
    with _lock:
        _stops.append(undo)


def _set_env(**values: str | None) -> None:
    """Set (``None``: remove) variables; :func:`stop_all` gives back the first values."""
    with _lock:
        for name, value in values.items():
            _saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this stand-in needs {module.split('.')[0]}: {_INSTALL}") from exc


def web_server(files: dict[str, bytes] | None = None) -> LocalServer:
    """Start a :class:`~dlutils.localserver.LocalServer` on 127.0.0.1 holding ``files``
    (:func:`demo_files` by default) and return it; ``server.url`` is its address.
    :func:`stop_all` stops it (and everything else the sandbox started).

    Examples
    --------
    >>> import tempfile
    >>> from dlutils import http_download, sandbox
    >>> server = sandbox.web_server({"hello.txt": b"hi"})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = http_download(server.url + "/hello.txt", folder + "/")
    ...     print(open(path).read())
    hi
    >>> sandbox.stop_all()
    """
    server = LocalServer(demo_files() if files is None else files).start()
    _on_stop(server.stop)
    return server


def hub() -> Any:
    """Start a stand-in of the HuggingFace Hub and point ``HF_ENDPOINT`` at it.

    It holds the dataset ``demo/tiny`` (``README.md``, ``data/train.csv``,
    ``data/validation.csv``; a tag ``v0.1``; a parquet export) and the model
    ``demo/tiny-model`` (``config.json``, ``model.safetensors``). Large files are served
    as the Hub serves LFS files: a redirect to a storage host on another port.
    """
    from .hf_hub import PARQUET_REVISION, HubStandIn

    stand_in = HubStandIn(page_size=50).__enter__()
    _on_stop(lambda: stand_in.__exit__(None, None, None))
    stand_in.add_repo(HF_DATASET, HF_FILES)
    stand_in.add_repo(HF_DATASET, {"README.md": HF_FILES["README.md"]}, revision="v0.1")
    stand_in.add_repo(HF_DATASET, HF_PARQUET, revision=PARQUET_REVISION)
    stand_in.add_repo(HF_MODEL, HF_MODEL_FILES, repo_type="model")
    _set_env(HF_ENDPOINT=stand_in.url, HF_TOKEN=None, HUGGING_FACE_HUB_TOKEN=None)
    return stand_in


def cluster() -> Any:
    """Start a stand-in of an AIStore cluster (a gateway and a target) whose bucket
    ``imagenet`` holds ``train-0000.tgz`` .. ``train-0009.tgz`` (1 KiB each, md5 kept);
    ``cluster.link(bucket, name)`` writes an ``ais://`` link to it.

    Examples
    --------
    >>> from dlutils import sandbox
    >>> cluster = sandbox.cluster()
    >>> cluster.link("imagenet", "train-0000.tgz").startswith("ais://127.0.0.1:")
    True
    >>> sandbox.stop_all()
    """
    from .aistore import AisStandIn

    stand_in = AisStandIn().__enter__()
    _on_stop(lambda: stand_in.__exit__(None, None, None))
    stand_in.create_bucket(AIS_BUCKET)
    for name, data in AIS_FILES.items():
        stand_in.put(AIS_BUCKET, name, data, checksum="md5")
    return stand_in


def s3() -> str:
    """Start moto's S3 server (once per process), fill its bucket ``demo`` afresh, and point
    boto3 at it with fake credentials (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...);
    your own AWS credentials and profiles are not read meanwhile. Returns its address."""
    global _moto
    server = _need("moto.server")
    boto3 = _need("boto3")
    with _lock:
        if _moto is None:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            _moto = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            _moto.start()
    host, port = _moto.get_host_and_port()
    url = f"http://{host}:{port}"
    folder = tempfile.mkdtemp(prefix="dlutils-sandbox-aws-")  # fake keys, never yours
    _on_stop(lambda: shutil.rmtree(folder, ignore_errors=True))
    credentials, config = os.path.join(folder, "credentials"), os.path.join(folder, "config")
    with open(credentials, "w") as f:
        f.write("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    with open(config, "w") as f:
        f.write("[default]\nregion = us-east-1\n")
    _set_env(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN=None,
        AWS_PROFILE=None,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=url,
        AWS_SHARED_CREDENTIALS_FILE=credentials,
        AWS_CONFIG_FILE=config,
        AWS_EC2_METADATA_DISABLED="true",
    )
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
    return url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gcs() -> str:
    """Start ``gcp-storage-emulator`` (in memory), put bucket ``demo`` in it
    (``notes.txt``, ``tables/2024.csv``, ``tables/2025.csv``) and point
    ``STORAGE_EMULATOR_HOST`` at it. Returns its address."""
    import requests

    _need("gcp_storage_emulator")
    port = _free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start"]
    command += ["--host=127.0.0.1", f"--port={port}", "--in-memory"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _on_stop(lambda: (process.terminate(), process.wait(10)))
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{endpoint}/storage/v1/b", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gcp-storage-emulator did not start on {endpoint}")
        time.sleep(0.05)
    requests.post(f"{endpoint}/storage/v1/b", json={"name": GCS_BUCKET}, timeout=10)
    for name, data in GCS_FILES.items():
        requests.post(
            f"{endpoint}/upload/storage/v1/b/{GCS_BUCKET}/o",
            params={"uploadType": "media", "name": name},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        ).raise_for_status()
    _set_env(STORAGE_EMULATOR_HOST=endpoint)
    return endpoint


def stop_all() -> None:
    """Stop every stand-in started here (moto's server stays for the process) and give the
    environment variables they set their former values."""
    with _lock:
        undo, env = list(reversed(_stops)), dict(_saved_env)
        _stops.clear()
        _saved_env.clear()
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    failed: BaseException | None = None
    for step in undo:  # every one, even after one fails
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - raised below, once all are stopped
            failed = failed or exc
    if failed is not None:
        raise failed


def _shutdown() -> None:
    global _moto
    stop_all()
    if _moto is not None:
        _moto.stop()
        _moto = None


atexit.register(_shutdown)
