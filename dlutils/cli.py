"""The ``dlutils`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 1 failure, 2 usage error)."""
    parser = _parser()
    args = parser.parse_args(argv)
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
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
