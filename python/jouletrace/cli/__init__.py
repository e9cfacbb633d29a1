"""The jouletrace command line: ``jouletrace <command> ...``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. User mistakes print a message (and usage) and return a
non-zero status; they never show a traceback unless ``-v`` is given.

May import anything in the package (sampling, energy, kernels, analysis, testing); nothing
imports it but ``jouletrace.__main__``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import JouletraceError
from . import attribute, compare, demo, info, record, report, serve

_COMMANDS = {
    "info": info,
    "record": record,
    "report": report,
    "attribute": attribute,
    "compare": compare,
    "demo": demo,
    "serve": serve,
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="jouletrace",
        description="Measure the energy of AI workloads: GPUs (NVML) and CPUs (RAPL), down to CUDA kernels.",
    )
    p.add_argument("--version", action="version", version=f"jouletrace {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _COMMANDS.values():
        mod.add_parser(sub)
    for sp in sub.choices.values():  # `jouletrace report -v FILE` works as well as `jouletrace -v report`
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="more detail; tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))  # exits 2 on usage errors
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("jouletrace: error: a command is required (try `jouletrace info`)", file=sys.stderr)
        return 2
    try:
        return int(_COMMANDS[args.command].run(args))
    except JouletraceError as e:
        if args.verbose:
            raise
        print(f"jouletrace {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into `head` and friends: not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a missing or unreadable file named by the user
        if args.verbose:
            raise
        print(f"jouletrace {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def console_main() -> None:
    sys.exit(main())
