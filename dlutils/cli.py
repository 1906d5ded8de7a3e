"""The ``dlutils`` command line: start, show, stop, wait for and remove download jobs.

Commands, as the AIStore CLI names them::

    dlutils download SRC DST [options]        (same: dlutils start download SRC DST)
    dlutils show download [JOB_ID] [--regex R] [--running] [--progress] [--refresh D] [--json] [-v]
    dlutils stop download JOB_ID | --regex R | --all
    dlutils wait download JOB_ID [--timeout D] [--progress] [--refresh D]
    dlutils rm download JOB_ID | --all

AIStore's spellings work too: ``show job download``, ``job rm download ID``,
``download rm ID``. For a single file (not a template, bucket or list), DST names the
file, as AIStore's destination names the object, unless it ends with ``/`` or is an
existing folder; ``--refresh 500`` is 500 ms, as in AIStore.

Jobs outlive the command. ``dlutils download`` records the job in the job store
(:mod:`dlutils.jobstore`), starts a detached worker (:mod:`dlutils.worker`), waits until
the worker has accepted the request (so a request :func:`dlutils.download` refuses is
still a usage error, exit 2), prints the job's id and returns. With ``--wait`` the job
runs in this process instead, still recorded in the store, and Ctrl-C aborts it;
``--progress`` without ``--wait`` follows the detached job with a bar (Ctrl-C stops
following, not the job).

Secrets never reach the store: the source is stored with its credentials removed, and
of the ``--header`` options only the names. The worker gets the request as given
(link, header values, object list) as JSON on its stdin.

A job is *Interrupted* when the store says pending or running but its worker process
is gone (or a zombie), or has not reported for
:data:`~dlutils.jobstore.HEARTBEAT_STALE` seconds. Running the same download again
(same source, destination and options, header values aside) takes the interrupted job
over: same id, counters from zero, objects already done skipped (the manifest in DST),
``.part`` files resumed (the transfer engine). The same download while its job still
runs is refused (exit 1), so two workers never write the same files.

``rm`` refuses a running job with exit 1; ``rm --all`` removes finished and aborted jobs
(interrupted ones stay, to be resumed or removed by id). Unknown job ids are exit 1.

Exit codes: 0 success; 1 the job failed, had errors, was aborted or interrupted, or the
command could not do what was asked; 2 usage errors, whose message names the argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from ._version import __version__

__all__ = ["main"]

#: Seconds ``dlutils download`` waits for its worker to take the job.
START_TIMEOUT = 30.0
#: Seconds ``dlutils stop download`` waits for a job to report that it stopped.
STOP_TIMEOUT = 10.0
_POLL = 0.1
#: Seconds between reports of ``show``/``wait`` (``--refresh``), as in AIStore's CLI.
DEFAULT_REFRESH = 1.0
_EXAMPLE = "dlutils download 'https://host/shard-{0000..0099}.tar' DST"


# ------------------------------------------------------------------------------ arguments


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is not valid: use 0 or more (0 = no limit)")
    return number


def _size(value: str) -> int:
    from .limits import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(value: str) -> float:
    from .limits import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not valid: give a duration above 0")
    return seconds


def _timeout(value: str) -> float | None:
    """``--timeout``: a duration, or ``""`` (AIStore's documented default) for none given."""
    if not value.strip():
        return None
    return _duration(value)


def _refresh(value: str) -> float:
    """``--refresh``: a duration; a bare number is milliseconds, as AIStore's CLI reads it."""
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d*)?|\.\d+", text):
        seconds = float(text) / 1000
        if seconds <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} is not valid: give a duration above 0")
        return seconds
    return _duration(value)


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise argparse.ArgumentTypeError(
            f"{value.split(':')[0]!r}... is not valid: write a header as 'Name: value'"
        )
    return name.strip(), text.strip()


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid regex: {exc}") from None
    return value


def _download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src",
        metavar="SRC",
        nargs="?",
        help="a link, a brace template or a bucket link (none with --hf-dataset/--hf-model)",
    )
    p.add_argument("dst", metavar="DST", nargs="?", help="the local folder to download into")
    p.add_argument("--desc", "--description", dest="desc", help="the job's description")
    p.add_argument(
        "--timeout",
        type=_timeout,
        help="time limit of one attempt at one object, request to last byte, e.g. 30s, 5m "
        '("" = none given, the default)',
    )
    p.add_argument("--max-conns", type=_count, default=0, help="transfers at once (0 = default)")
    p.add_argument(
        "--limit-bph", type=_size, default=0, help="bytes per hour, e.g. 10GiB (0 = none)"
    )
    p.add_argument(
        "--sync", action="store_true", help="bucket links: delete local files gone remotely"
    )
    p.add_argument(
        "--object-list",
        "--from",
        dest="object_list",
        metavar="FILE",
        help="object names (a JSON list, or one a line) joined to SRC",
    )
    p.add_argument(
        "--header",
        type=_header,
        action="append",
        metavar="'NAME: VALUE'",
        help="an HTTP header for every request (repeatable; never stored)",
    )
    p.add_argument("--hf-dataset", metavar="ID", help="a HuggingFace dataset, e.g. org/name")
    p.add_argument("--hf-model", metavar="ID", help="a HuggingFace model, e.g. org/name")
    p.add_argument("--hf-file", metavar="PATH", help="one file of the repository")
    p.add_argument("--hf-revision", metavar="REV", help="branch, tag or commit (default main)")
    p.add_argument(
        "--hf-auth", metavar="TOKEN", help="a HuggingFace token (else HF_TOKEN; never stored)"
    )
    p.add_argument(
        "--blob-threshold",
        type=_size,
        metavar="SIZE",
        help="HuggingFace: files this big or bigger come one at a time, in parallel ranges",
    )
    p.add_argument(
        "--cache",
        choices=tuple(_CACHE),
        default="ask",
        help="files already here: ask the server whether each is current (ask, the default), "
        "keep those known good by a verified checksum with no request at all, as when the "
        "server is down (verified), or download everything again (off)",
    )
    p.add_argument("--progress", action="store_true", help="show progress until the job ends")
    p.add_argument("--wait", action="store_true", help="run the job here and wait for its end")
    p.set_defaults(handler=_cmd_download, parser=p)


#: ``--cache`` -> the ``cache`` option of :func:`dlutils.download`.
_CACHE: dict[str, bool | str] = {"ask": True, "verified": "verified", "off": False}


_REFRESH_HELP = (
    "time between reports (default 1s); a bare number is milliseconds, as in AIStore "
    "(500 = 500ms), or give a unit: 500ms, 2s, 1m"
)


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB_ID", nargs="?", help="one job (default: all jobs)")
    p.add_argument("--regex", type=_regex, help="only jobs whose description matches")
    p.add_argument("--running", action="store_true", help="only jobs not finished or aborted")
    p.add_argument("--all", action="store_true", help="all jobs (the default; kept for scripts)")
    p.add_argument(
        "--progress",
        action="store_true",
        help="a bar for the job and one for each file being downloaded, until the job ends",
    )
    p.add_argument(
        "--refresh",
        type=_refresh,
        metavar="DURATION",
        help=_REFRESH_HELP + "; given, the report repeats until the jobs end",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.add_argument(
        "-v",
        "--verbose",
        dest="details",
        action="store_true",
        help="files in progress, source, destination",
    )
    p.set_defaults(handler=_cmd_show, parser=p)


def _stop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB_ID", nargs="?", help="the job to stop")
    p.add_argument("--regex", type=_regex, help="stop the running jobs whose description matches")
    p.add_argument("--all", action="store_true", help="stop every running job")
    p.set_defaults(handler=_cmd_stop, parser=p)


def _wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB_ID", help="the job to wait for")
    p.add_argument(
        "--timeout", type=_timeout, help='give up after this long (exit 1); "" = wait forever'
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="a bar for the job and one for each file being downloaded",
    )
    p.add_argument("--refresh", type=_refresh, metavar="DURATION", help=_REFRESH_HELP)
    p.set_defaults(handler=_cmd_wait, parser=p)


def _rm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB_ID", nargs="?", help="the finished job to forget")
    p.add_argument("--all", action="store_true", help="forget every finished or aborted job")
    p.set_defaults(handler=_cmd_rm, parser=p)


class _Parser(argparse.ArgumentParser):
    """argparse, with credentials removed from its messages (they quote the arguments)."""

    def error(self, message: str):  # type: ignore[override]
        from .names import redact_text

        super().error(redact_text(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dlutils",
        description="Download datasets and models, fast and without losing a byte.",
    )
    parser.add_argument("--version", action="version", version=f"dlutils {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what dlutils does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="serve a generated dataset on 127.0.0.1 and download it twice (no internet needed)",
    )
    demo.add_argument("--dest", default="dlutils-demo", help="folder to download into")
    demo.add_argument("--files", type=int, default=24, help="number of files (default 24)")
    demo.add_argument("--size", type=int, default=256 << 10, help="bytes per file")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(parser=demo)

    _download_arguments(
        commands.add_parser("download", help="start a download job (same as: start download)")
    )
    verbs: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
        ("start", "start a job: dlutils start download SRC DST", _download_arguments),
        ("show", "list download jobs, or show one", _show_arguments),
        ("stop", "stop (abort) download jobs", _stop_arguments),
        ("wait", "wait for a download job to end", _wait_arguments),
        ("rm", "forget finished download jobs", _rm_arguments),
    ]
    for verb, text, setup in verbs:
        kinds = commands.add_parser(verb, help=text).add_subparsers(
            dest="kind", metavar="KIND", required=True
        )
        setup(kinds.add_parser("download", help=text))
    return parser


def _template_hint(words: Sequence[str]) -> str:
    """A hint when ``words`` look like a brace template the shell expanded, else ``""``."""
    links = [w for w in words if "://" in w]
    braces = any("{" in w or "}" in w for w in words) or any(".." in w for w in links)
    if len(links) < 2 and not braces:
        return ""
    example = _EXAMPLE
    if len(links) >= 2:
        prefix = os.path.commonprefix(links).rstrip("0123456789")
        suffix = os.path.commonprefix([w[::-1] for w in links])[::-1].lstrip("0123456789")
        middles = [w[len(prefix) : len(w) - len(suffix)] for w in links]
        if all(m.isdigit() for m in middles):
            example = f"dlutils download '{prefix}{{{middles[0]}..{middles[-1]}}}{suffix}' DST"
    return f"; did your shell expand a template? quote it: {example}"


# ------------------------------------------------------------------------------ output


def _err(message: str) -> None:
    from .names import redact_text

    print(f"dlutils: error: {redact_text(message)}", file=sys.stderr)


def _counts(status: Any) -> str:
    downloaded = status.finished - status.skipped - status.deleted
    text = f"{downloaded} files downloaded, skipped: {status.skipped}, errors: {status.errors}"
    return text + (f", deleted: {status.deleted}" if status.deleted else "")


def _table(records: Sequence[Any]) -> str:
    rows = [("JOB ID", "STATUS", "ERRORS", "DESCRIPTION")]
    rows += [(r.id, r.label(), str(r.status.errors), r.description) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(row[i].ljust(widths[i]) for i in range(3)) + "  " + row[3] for row in rows
    )


def _progress_line(record: Any) -> str:
    from .limits import format_size

    status = record.status
    done = status.finished + status.errors
    total = status.total if status.total is not None else status.scheduled
    if not total:
        return f"{record.id} progress: 0/?"
    percent = 100 * done / total
    return (
        f"{record.id} progress: downloaded {done} files (out of {total}"
        f"{'' if status.total is not None else ' so far'}) ({percent:.2f}%), "
        f"{format_size(status.bytes)}"
    )


def _summary(record: Any) -> tuple[str, int]:
    """The closing line about a job and the exit code it means."""
    status = record.status
    if record.failure:
        return f"Job {record.id} could not start: {record.failure}", record.failure_code or 1
    if record.interrupted:
        return (
            f"Interrupted: the worker of {record.id} (pid {record.pid}) is gone; run the same "
            "`dlutils download` again to resume it",
            1,
        )
    if record.state.value == "aborted":
        return f"Aborted: {_counts(status)}", 1
    if record.state.value == "finished":
        return f"Done: {_counts(status)}", 1 if status.errors else 0
    return _progress_line(record), 1


def _error_lines(record: Any) -> list[str]:
    status = record.status
    if not status.errors:
        return []
    lines = ["Errors:"] + [f"\t{name}: {error}" for name, error in status.download_errors]
    if status.errors > len(status.download_errors):
        lines.append(f"\t... and {status.errors - len(status.download_errors)} more")
    return lines


def _job_text(record: Any, details: bool) -> str:
    from .limits import format_size

    lines = []
    if details:
        lines += [f"Description: {record.description}", f"Source: {record.source}"]
        lines += [f"Destination: {record.dest}"]
    if record.done or record.interrupted or record.failure:
        lines.append(_summary(record)[0])
    else:
        lines.append(_progress_line(record))
    if record.interrupted:
        lines.append(_progress_line(record))
    tasks = sorted(record.status.current_tasks, key=lambda t: t.name)
    if details and tasks and not record.interrupted:
        lines.append("Progress of files that are currently being downloaded:")
        for task in tasks:
            done = format_size(task.downloaded)
            if task.total:
                percent = 100 * task.downloaded / task.total
                lines.append(f"\t{task.name}: {done}/{format_size(task.total)} ({percent:.2f}%)")
            else:
                lines.append(f"\t{task.name}: {done}")
    return "\n".join(lines + _error_lines(record))


class _Bar:
    """The job's bar (files) and one bar per file being downloaded (bytes), on stderr.

    As AIStore's ``--progress`` shows them: the files bar moves when a file ends, the
    byte bars while files come in; a file's bar goes away when the file is done.
    """

    def __init__(self, job_id: str):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.bar = tqdm(total=None, unit="file", desc=f"{job_id} files", dynamic_ncols=True)
        self.files: dict[str, Any] = {}

    def update(self, status: Any) -> None:
        from .limits import format_size

        total = status.total if status.total is not None else status.scheduled
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(status.finished + status.errors - self.bar.n)
        self.bar.set_postfix_str(f"{format_size(status.bytes)}, {status.errors} errors")
        current = {task.name: task for task in status.current_tasks}
        for name in [n for n in self.files if n not in current]:
            self.files.pop(name).close()
        for name in sorted(current):
            task = current[name]
            bar = self.files.get(name)
            if bar is None:
                bar = self.files[name] = self._tqdm(
                    total=task.total,
                    desc=name,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    leave=False,
                    dynamic_ncols=True,
                )
            if task.total and bar.total != task.total:
                bar.total = task.total
            bar.update(task.downloaded - bar.n)

    def close(self) -> None:
        for bar in self.files.values():
            bar.close()
        self.files.clear()
        self.bar.close()


def _watch(
    store: Any, job_id: str, *, progress: bool, interval: float, timeout: float | None = None
) -> Any:
    """Poll the store until the job ends (or is interrupted); returns its last record."""
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = _Bar(job_id) if progress else None
    try:
        while True:
            record = store.get(job_id)
            if bar is not None:
                bar.update(record.status)
            if record.done or record.interrupted:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still running after {timeout:g} s")
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------------------ commands


def _read_object_list(path: str, src: str) -> dict[str, str]:
    """``name -> link``: the names of ``path`` (a JSON list, or one a line) joined to ``src``."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path!r} is not valid JSON: {exc}") from None
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path!r} must be a JSON list of strings (object names)")
    else:
        names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n.strip()]
    if not names:
        raise ValueError(f"{path!r} holds no object name")
    base = src if src.endswith("/") else src + "/"
    web = src.lower().startswith(("http://", "https://"))
    return {n: base + (quote(n.lstrip("/"), safe="/") if web else n.lstrip("/")) for n in names}


def _hf_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Turn ``--hf-dataset``/``--hf-model`` (+ file, revision) into an ``hf://`` SRC."""
    repo = args.hf_dataset or args.hf_model
    if args.hf_dataset and args.hf_model:
        parser.error("argument --hf-model: not allowed with --hf-dataset (give one of them)")
    if repo is None:
        if args.hf_file or args.hf_revision:
            flag = "--hf-file" if args.hf_file else "--hf-revision"
            parser.error(f"argument {flag}: give --hf-dataset or --hf-model with it")
        if (args.hf_auth or args.blob_threshold) and not (args.src or "").startswith("hf://"):
            flag = "--hf-auth" if args.hf_auth else "--blob-threshold"
            parser.error(
                f"argument {flag}: applies to HuggingFace downloads; give --hf-dataset, "
                "--hf-model or an hf:// SRC"
            )
        return
    if args.dst is not None:
        parser.error(
            f"unrecognized arguments: {args.dst}; with --hf-dataset/--hf-model give only DST"
        )
    args.dst, args.src = (
        args.src,
        (
            ("hf://datasets/" if args.hf_dataset else "hf://")
            + repo
            + (f"@{quote(args.hf_revision, safe='')}" if args.hf_revision else "")
            + (f"/{args.hf_file.lstrip('/')}" if args.hf_file else "")
        ),
    )


def _cmd_download(args: argparse.Namespace, store: Any) -> int:
    from .names import redact

    parser = args.parser
    _hf_source(args, parser)
    if args.src is None or args.dst is None:
        parser.error("the following arguments are required: " + ("DST" if args.src else "SRC, DST"))
    from .destinations import is_store

    into_store = is_store(args.dst)  # s3://: streamed into the store (credentials: s3fs's)
    if into_store and args.dst.strip().lower().startswith("memory:"):
        parser.error(
            f"argument DST: {redact(args.dst)!r} is the memory of one process, gone when the "
            "command ends: give a local folder or an s3:// prefix"
        )
    if "://" in args.dst and not into_store:
        parser.error(
            f"argument DST: {redact(args.dst)!r} is a link, but DST is a local folder or an "
            "s3:// prefix" + _template_hint([args.src, args.dst])
        )
    from .errors import InvalidInputError
    from .sources.classify import check_template

    try:
        check_template(args.src)  # a malformed template is a usage error, never a link
    except InvalidInputError as exc:
        parser.error(f"argument SRC: {exc}")
    objects = None
    if args.object_list:
        try:
            objects = _read_object_list(args.object_list, args.src)
        except (OSError, ValueError) as exc:
            parser.error(f"argument --object-list: {exc}")
    if into_store:
        dest = args.dst.strip()
    else:
        dest = os.path.abspath(os.path.expanduser(args.dst))
    source: Any = objects or args.src
    folder = dest
    if objects is None and _one_object(args.src, args.dst):
        # AIStore: for a single file, DST names the object (unless it names a folder)
        if into_store:
            folder, _, name = dest.rpartition("/")
            folder += "/"
        else:
            folder, name = os.path.split(dest)
        source = {name: args.src}
    headers = dict(args.header or [])
    if objects is not None:
        description = f"{redact(args.src)} ({len(objects)} objects) -> {dest}"
    else:
        description = f"{redact(args.src)} -> {dest}"
    options: dict[str, Any] = {
        "description": args.desc or description,
        "timeout": args.timeout,
        "connections": args.max_conns or None,
        "bytes_per_hour": args.limit_bph or None,
        "headers": headers or None,
        **({"sync": True} if args.sync else {}),
        **({"token": args.hf_auth} if args.hf_auth else {}),
        **({"blob_threshold": args.blob_threshold} if args.blob_threshold else {}),
        **({"cache": _CACHE[args.cache]} if args.cache != "ask" else {}),
    }
    request = {"source": source, "dest": folder, "options": options}
    recorded = {  # what the store keeps of the options: no header values, they may hold tokens
        "timeout": args.timeout,
        "max_conns": args.max_conns,
        "limit_bph": args.limit_bph,
        "sync": args.sync,
        "object_list": os.path.abspath(args.object_list) if args.object_list else None,
        "headers": sorted(headers),
        "hf_auth": bool(args.hf_auth),
        "blob_threshold": args.blob_threshold,
        **({"cache": args.cache} if args.cache != "ask" else {}),  # older records match
    }
    from .errors import JobStateError

    try:
        job_id, resumed = store.claim(options["description"], redact(args.src), dest, recorded)
    except JobStateError as exc:
        _err(str(exc))
        return 1
    if resumed:
        print(f"Resuming interrupted job {job_id}", file=sys.stderr)
    if args.wait:
        return _run_here(store, job_id, request, progress=args.progress)
    code = _start_worker(store, job_id, request)
    if code is not None:
        return code
    print(job_id)
    print(f"Run `dlutils show download {job_id}` to monitor the progress of downloading.")
    if not args.progress:
        return 0
    line, code = _summary(_watch(store, job_id, progress=True, interval=0.5))
    print(line)
    return code


def _one_object(src: str, dst: str) -> bool:
    """Whether ``src`` is one file (not a template, bucket or repository) and ``dst`` its name.

    ``dst`` names a folder when it ends with a separator or is an existing folder.
    """
    from .destinations import is_store
    from .errors import InvalidInputError
    from .sources._common import names_a_folder
    from .sources.classify import classify_source

    try:
        if classify_source(src).kind != "single":
            return False
    except InvalidInputError:
        return False  # refused later, with the job's own words
    if is_store(dst):
        return not dst.strip().endswith("/")
    return not names_a_folder(os.path.expanduser(dst))


def _refused(store: Any, job_id: str) -> int:
    record = store.get(job_id)
    _err(record.failure or "the job could not start")
    store.remove(job_id)
    return record.failure_code or 1


def _run_here(store: Any, job_id: str, request: dict[str, Any], *, progress: bool) -> int:
    """``--wait``: run the job in this process, still recorded in the store."""
    from .worker import run

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    bar = _Bar(job_id) if progress else None
    try:
        run(store, job_id, request, stop=stop, on_status=bar.update if bar else None)
    except Exception:
        if store.get(job_id).failure:  # the request was refused: say why, forget the job
            return _refused(store, job_id)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    record = store.get(job_id)
    line, code = _summary(record)
    print(line)
    for text in _error_lines(record):
        print(text, file=sys.stderr)
    return code


def _start_worker(store: Any, job_id: str, request: dict[str, Any]) -> int | None:
    """Start the detached worker and wait until it took the job; an exit code if it did not."""
    log_path = store.log_path(job_id)
    env = {**os.environ, "DLUTILS_HOME": store.home}
    with store.open_log(job_id) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dlutils", "_worker", job_id],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            cwd=store.home,
            env=env,
            start_new_session=True,
        )
    try:
        proc.stdin.write(json.dumps(request).encode())  # secrets: only through this pipe
        proc.stdin.close()
    except BrokenPipeError:
        pass
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        record = store.get(job_id)
        if record.failure:
            return _refused(store, job_id)
        if record.state.value != "pending":
            return None
        if proc.poll() is not None:
            record = store.get(job_id)
            if record.failure:
                return _refused(store, job_id)
            _err(f"the worker of job {job_id} exited with code {proc.returncode}; see {log_path}")
            return 1
        time.sleep(0.02)
    print(f"the worker of job {job_id} is slow to start; see {log_path}", file=sys.stderr)
    return None


def _cmd_show(args: argparse.Namespace, store: Any) -> int:
    if args.job_id is not None:
        if args.progress:
            interval = args.refresh or DEFAULT_REFRESH
            record = _watch(store, args.job_id, progress=True, interval=interval)
            print(_job_text(record, args.details))
            return 0
        while True:
            record = store.get(args.job_id)
            if args.json:
                print(json.dumps(record.to_dict(), indent=2))
            else:
                print(_job_text(record, args.details))
            if not args.refresh or record.done or record.interrupted:
                return 0
            time.sleep(args.refresh)
            print()
    while True:
        records = store.list(args.regex, active_only=args.running)
        if args.json:
            print(json.dumps([r.to_dict() for r in records], indent=2))
        elif records:
            print(_table(records))
        else:
            print("No running download jobs" if args.running else "No download jobs")
        if not args.refresh or all(r.done or r.interrupted for r in records):
            return 0
        time.sleep(args.refresh)
        print()


def _cmd_stop(args: argparse.Namespace, store: Any) -> int:
    if (args.job_id is not None) == bool(args.all or args.regex):
        args.parser.error("argument JOB_ID: give a job id, or --regex or --all (not both)")
    if args.job_id is not None:
        targets = [store.get(args.job_id)]
    else:
        targets = [r for r in store.list(args.regex, active_only=True) if not r.interrupted]
        if not targets:
            print("No running download jobs")
            return 0
    stopping = []
    for record in targets:
        store.request_abort(record.id)
        if record.done:
            print(f"Job {record.id} is already {record.state.value}")
        elif record.interrupted:
            print(f"Job {record.id} was interrupted; marked aborted")
        else:
            stopping.append(record.id)
    deadline = time.monotonic() + STOP_TIMEOUT
    for job_id in stopping:
        while True:
            record = store.get(job_id)
            if record.done or record.interrupted:
                print(f"Stopped download job {job_id}")
                break
            if time.monotonic() >= deadline:
                print(f"Abort requested; job {job_id} is still stopping")
                break
            time.sleep(_POLL)
    return 0


def _cmd_wait(args: argparse.Namespace, store: Any) -> int:
    try:
        record = _watch(
            store,
            args.job_id,
            progress=args.progress,
            interval=args.refresh or DEFAULT_REFRESH,
            timeout=args.timeout,
        )
    except TimeoutError as exc:
        _err(str(exc))
        return 1
    line, code = _summary(record)
    print(line)
    for text in _error_lines(record):
        print(text, file=sys.stderr)
    return code


def _cmd_rm(args: argparse.Namespace, store: Any) -> int:
    from .errors import JobStateError

    if (args.job_id is not None) == args.all:
        args.parser.error("argument JOB_ID: give a job id or --all (not both)")
    if args.all:
        removed = [store.remove(r.id) for r in store.list() if r.done]
        print(f"Removed {len(removed)} finished download job(s)")
        return 0
    try:
        store.remove(args.job_id)
    except JobStateError as exc:
        _err(str(exc))
        return 1
    print(f"Removed download job {args.job_id}")
    return 0


# ------------------------------------------------------------------------------ main

_VERBS = ("start", "show", "stop", "wait", "rm")


def _aliases(argv: list[str]) -> list[str]:
    """AIStore's other spellings, rewritten to ours where they cannot mean anything else.

    ``show job download ...`` and ``job show download ...`` (AIStore 3.x) mean ``show
    download ...``; ``download rm ID`` (and ``download show|stop|wait ...``) mean ``rm
    download ID``: ``rm`` is never a link, so no download is mistaken for it.
    """
    i = 0
    while i < len(argv) and argv[i].startswith("-"):  # global options: -v, --version
        i += 1
    head, rest = argv[:i], argv[i:]
    if rest[:1] == ["job"] and len(rest) >= 3 and rest[1] in _VERBS and rest[2] == "download":
        rest = [rest[1], *rest[2:]]
    elif len(rest) >= 3 and rest[0] in _VERBS and rest[1] == "job" and rest[2] == "download":
        rest = [rest[0], *rest[2:]]
    elif len(rest) >= 2 and rest[0] == "download" and rest[1] in _VERBS[1:]:
        rest = [rest[1], "download", *rest[2:]]
    return head + rest


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 failure, 2 usage error).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the command (and the job it waited for) succeeded; 1 when a job failed,
        was aborted or had errors, or a job was not found or could not be removed;
        2 for usage errors (argparse's convention).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"] and len(argv) == 2:  # the detached process of a job
        from .worker import main as worker_main

        return worker_main(argv[1])
    parser = _parser()
    args, extras = parser.parse_known_args(_aliases(argv))
    if extras:
        sub = getattr(args, "parser", parser)
        hint = ""
        if getattr(args, "handler", None) is _cmd_download:
            hint = _template_hint([args.src, args.dst, *(w for w in extras if w[:1] != "-")])
        sub.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from .demo import run_demo

        if args.files < 1 or args.size < 0:
            parser.error(f"--files must be >= 1 and --size >= 0, got {args.files} and {args.size}")
        first, second = run_demo(
            args.dest, files=args.files, size=args.size, progress=not args.no_progress
        )
        ok = first.status.errors == 0 and first.files == args.files and second.bodies_sent == 0
        return 0 if ok else 1
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    import sqlite3

    import requests

    from .errors import DownloadError
    from .jobstore import JobStore, state_home

    try:
        with JobStore() as store:
            return handler(args, store)
    except DownloadError as exc:  # JobNotFoundError among them
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        print("\nstopped watching; the job keeps running", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except sqlite3.Error as exc:  # the job store: a full disk, a read-only or locked file
        _err(
            f"the job store in {state_home()!r} failed: {exc} ({type(exc).__name__}); "
            "free some space, or set DLUTILS_HOME to a writable folder"
        )
        return 1
    except (OSError, requests.RequestException) as exc:  # a plain operational failure
        _err(f"{type(exc).__name__}: {exc}")
        return 1
    except Exception:  # a bug: its traceback, credentials removed, for the report
        import traceback

        from .names import redact_text

        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        _err("unexpected failure (above); please report it")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
