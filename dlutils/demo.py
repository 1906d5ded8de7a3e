"""``dlutils demo``: serve a generated dataset on 127.0.0.1 and download it twice, offline."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .localserver import LocalServer
from .sources.http import http_download
from .templates import count, expand

__all__ = ["make_dataset", "run_demo", "DemoRun"]


def make_dataset(files: int = 24, size: int = 256 << 10, seed: int = 0) -> dict[str, bytes]:
    """A deterministic sample dataset: ``shards/shard-000.bin`` ... of random bytes."""
    rng = random.Random(seed)
    width = max(3, len(str(files - 1)))
    return {f"shards/shard-{i:0{width}d}.bin": rng.randbytes(size) for i in range(files)}


@dataclass
class DemoRun:
    """What one pass of the demo did, as seen by the server."""

    files: int
    bodies_sent: int
    not_modified: int
    bytes_sent: int
    seconds: float


def _one_pass(server: LocalServer, template: str, dest: str, workers: int) -> DemoRun:
    server.clear_log()
    started = time.monotonic()
    links = list(expand(template))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        paths = list(pool.map(lambda link: http_download(link, dest), links))
    seconds = time.monotonic() - started
    records = [r for r in server.requests if r.method == "GET"]
    return DemoRun(
        files=len(paths),
        bodies_sent=sum(1 for r in records if r.status in (200, 206)),
        not_modified=sum(1 for r in records if r.status == 304),
        bytes_sent=sum(r.bytes_sent for r in records),
        seconds=seconds,
    )


def run_demo(
    dest: str = "dlutils-demo",
    *,
    files: int = 24,
    size: int = 256 << 10,
    workers: int = 4,
    echo: Callable[[str], object] = print,
) -> tuple[DemoRun, DemoRun]:
    """Serve :func:`make_dataset` locally, fetch it with a brace template, then fetch it again.

    The second pass finds every file current (the server answers ``304 Not
    Modified``) and transfers no body. Returns both passes.
    """
    dataset = make_dataset(files, size)
    last = len(dataset) - 1
    width = max(3, len(str(last)))
    os.makedirs(dest, exist_ok=True)
    with LocalServer(dataset) as server:
        template = server.url_for("shards/shard-") + f"{{{0:0{width}d}..{last:0{width}d}}}.bin"
        echo(f"serving {len(dataset)} files of {size:,} bytes at {server.url}")
        echo(f"template: {template}  ({count(template)} names)")
        first = _one_pass(server, template, dest, workers)
        echo(
            f"first run:  {first.files} files in {dest}/, {first.bodies_sent} downloaded, "
            f"{first.bytes_sent:,} bytes in {first.seconds:.2f}s"
        )
        second = _one_pass(server, template, dest, workers)
        echo(
            f"second run: {second.files} files current, {second.bodies_sent} downloaded, "
            f"{second.not_modified} answered 304 Not Modified, {second.bytes_sent:,} bytes "
            f"in {second.seconds:.2f}s"
        )
    return first, second
