"""Before a job starts on a Dask cluster: it has workers, and each sees the destination
folder as the client does (:func:`check_cluster`)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from ..errors import InvalidInputError
from .records import FOLDER


def cluster_threads(client: Any) -> dict[str, int]:
    """Worker address -> threads, of the workers connected now."""
    return dict(client.nthreads())


def workers_missing(client: Any, marker: str, token: str) -> dict[str, str]:
    """The workers that do not see the file ``marker`` holding ``token``: address -> why."""
    answers = client.run(_read_marker, marker)
    return {addr: why for addr, got in answers.items() if (why := _compare(got, token))}


def _compare(got: str, token: str) -> str:
    if got == token:
        return ""
    return got if got.startswith("cannot") else "sees another file there"


def _read_marker(marker: str) -> str:
    try:
        with open(marker, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        return f"cannot read it ({type(exc).__name__})"


def check_shared(client: Any, root: str, job_id: str) -> None:
    """Refuse a destination some worker does not see as the client does, naming them.

    The client writes a marker file of random content in ``root``'s records folder and
    every worker must read it back; a worker on another host without the shared
    filesystem (or with another one mounted there) cannot.
    """
    folder = os.path.join(root, FOLDER)
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, f"{job_id}-probe")
    token = secrets.token_hex(16)
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write(token)
    try:
        missing = workers_missing(client, marker, token)
    finally:
        os.unlink(marker)
    if missing:
        named = "; ".join(f"{addr}: {why}" for addr, why in sorted(missing.items()))
        raise InvalidInputError(
            f"dest {root!r} is not the same folder on every worker of the cluster ({named}): "
            "give a folder on a filesystem every worker mounts at the same path"
        )


def check_cluster(client: Any, dest: str | None, job_id: str) -> None:
    """Before a job starts on ``client``'s cluster: it has workers, and they see ``dest``.

    Raises
    ------
    dlutils.InvalidInputError
        No worker is connected, or some worker does not see ``dest`` as the client does
        (:func:`check_shared`, naming it).
    """
    if not sum(cluster_threads(client).values()):
        raise InvalidInputError(
            "executor: the Dask cluster has no workers; start some, or wait for them with "
            "client.wait_for_workers(n)"
        )
    if dest is not None:  # None: an object store, checked reachable by the job already
        check_shared(client, os.path.abspath(dest), job_id)
