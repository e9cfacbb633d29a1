"""The jouletrace command line: ``jouletrace <command> ...``.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. User mistakes print a message (and usage) and return a
non-zero status; they never show a traceback unless ``-v`` is given.

May import anything in the package (sampling, energy, kernels, analysis, testing); nothing
imports it but ``jouletrace.__main__``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .._version import __version__
from ..errors import JouletraceError

#: The commands: name -> one-line help; each is the module ``jouletrace.cli.<name>``.
#: The one place the command line imports lazily (by ``importlib``, in :func:`_command`): a
#: command's module imports what it runs at its top (the kernel attribution, the HTML report,
#: the simulated GPU, prometheus_client...), so ``jouletrace --help`` loads none of them and
#: ``jouletrace info`` only its own (bench/bench_import.py measures both).
COMMANDS = {
    "info": "list sources, whether each is usable here and why not, GPUs and sensors",
    "record": "run a command and record its energy (like perf stat)",
    "report": "summarise saved recordings (table, --csv, --json, --plot)",
    "attribute": "energy per CUDA kernel name from an nsys or PyTorch-profiler trace",
    "compare": "compare runs: per unit of work, by category, why they differ",
    "demo": "record, report and attribute a simulated training run (no GPU needed)",
    "serve": "serve this node's energy, power and sampler health to Prometheus",
}


def _command(name: str) -> ModuleType:
    """The module of command ``name``, imported now (see :data:`COMMANDS`)."""
    return importlib.import_module(f"{__name__}.{name}")


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: the first word that is not an option (the top-level
    options take no value), if it is a command."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with the arguments of ``command`` only (the others are listed by name and help)."""
    p = argparse.ArgumentParser(
        prog="jouletrace",
        description="Measure the energy of AI workloads: GPUs (NVML) and CPUs (RAPL), down to CUDA kernels.",
    )
    p.add_argument("--version", action="version", version=f"jouletrace {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, help in COMMANDS.items():
        if name == command:
            _command(name).add_parser(sub, help)
        else:
            sub.add_parser(name, help=help)
    for sp in sub.choices.values():  # `jouletrace report -v FILE` works as well as `jouletrace -v report`
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="more detail; tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen(words))
    args = parser.parse_args(words)  # exits 2 on usage errors
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("jouletrace: error: a command is required (try `jouletrace info`)", file=sys.stderr)
        return 2
    try:
        return int(_command(args.command).run(args))
    except JouletraceError as e:
        if args.verbose:
            raise
        print(f"jouletrace {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Output piped into `head` and friends: not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
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
