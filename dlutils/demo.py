"""``dlutils demo``: serve a generated dataset on 127.0.0.1 and download it twice, offline."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from .jobs import Job, JobStatus
from .limits import format_size
from .localserver import LocalServer
from .templates import count

__all__ = ["make_dataset", "run_demo", "DemoRun", "describe"]


def make_dataset(files: int = 24, size: int = 256 << 10, seed: int = 0) -> dict[str, bytes]:
    """A deterministic sample dataset: ``shards/shard-000.bin`` ... of random bytes."""
    rng = random.Random(seed)
    width = max(3, len(str(files - 1)))
    return {f"shards/shard-{i:0{width}d}.bin": rng.randbytes(size) for i in range(files)}


@dataclass
class DemoRun:
    """What one pass of the demo did: the job's final status and what the server sent."""

    status: JobStatus
    bodies_sent: int
    not_modified: int
    bytes_sent: int

    @property
    def files(self) -> int:
        return self.status.finished


def _one_pass(server: LocalServer, template: str, dest: str, progress: bool) -> DemoRun:
    server.clear_log()
    job = Job.range(template, dest, description=f"demo -> {dest}", progress=progress)
    status = job.start().wait()
    records = [r for r in server.requests if r.method == "GET"]
    return DemoRun(
        status=status,
        bodies_sent=sum(1 for r in records if r.status in (200, 206)),
        not_modified=sum(1 for r in records if r.status == 304),
        bytes_sent=sum(r.bytes_sent for r in records),
    )


def describe(status: JobStatus) -> str:
    """One line about a finished job, as ``dlutils show download`` prints it."""
    seconds = (
        (status.finished_time - status.started_time).total_seconds()
        if status.finished_time and status.started_time
        else 0.0
    )
    downloaded = status.finished - status.skipped
    return (
        f"{status.id} {status.state.value}: {downloaded} files downloaded, "
        f"skipped: {status.skipped}, errors: {status.errors}, "
        f"{format_size(status.bytes)} in {seconds:.2f}s"
    )


def run_demo(
    dest: str = "dlutils-demo",
    *,
    files: int = 24,
    size: int = 256 << 10,
    progress: bool = True,
    echo: Callable[[str], object] = print,
) -> tuple[DemoRun, DemoRun]:
    """Serve :func:`make_dataset` locally, fetch it with a range job, then fetch it again.

    The second job finds every file current (the server answers ``304 Not
    Modified``), counts them as skipped and transfers no body. Returns both passes.
    """
    dataset = make_dataset(files, size)
    last = len(dataset) - 1
    width = max(3, len(str(last)))
    os.makedirs(dest, exist_ok=True)
    with LocalServer(dataset) as server:
        template = server.url_for("shards/shard-") + f"{{{0:0{width}d}..{last:0{width}d}}}.bin"
        echo(f"serving {len(dataset)} files of {size:,} bytes at {server.url}")
        echo(f"range job: {template} -> {dest}/  ({count(template)} names)")
        first = _one_pass(server, template, dest, progress)
        echo(f"first run:  {describe(first.status)}")
        second = _one_pass(server, template, dest, progress)
        echo(f"second run: {describe(second.status)}")
        echo(
            f"the server sent {second.bodies_sent} bodies and answered "
            f"{second.not_modified} requests with 304 Not Modified on the second run"
        )
    return first, second
