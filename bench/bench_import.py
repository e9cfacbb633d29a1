"""Import and command-line start-up time (issue 12): figures only, no timed asserts.

Runs each command in a fresh interpreter, several times, and prints medians:
``import jouletrace`` (``-X importtime``: the top-level entry's cumulative µs, and numpy's
alone), the wall time of ``jouletrace --help`` and ``jouletrace info --help``, and how many
``jouletrace.*`` modules each loads. Run: ``python bench/bench_import.py [RUNS]``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def _importtime(stmt: str, top: str) -> float:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True,
                         check=True).stderr
    for line in err.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == top:
            return int(parts[1]) / 1000.0
    raise RuntimeError(f"{top} not in -X importtime output")


def _wall(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, check=True)
    return (time.perf_counter() - t) * 1000.0


def _loaded(code: str) -> int:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(sum(m.startswith('jouletrace') "
                          "for m in sys.modules), file=sys.stderr)"], capture_output=True, text=True)
    return int(out.stderr.strip().splitlines()[-1])


def main(runs: int = 7) -> None:
    cli = "import sys; from jouletrace.cli import main; sys.argv = ['jouletrace', {}]\ntry:\n    main()\nexcept SystemExit:\n    pass"
    rows = {
        "import numpy (importtime)": [_importtime("import numpy", "numpy") for _ in range(runs)],
        "import jouletrace (importtime)": [_importtime("import jouletrace", "jouletrace") for _ in range(runs)],
        "python -c 'import numpy' (wall)": [_wall(["-c", "import numpy"]) for _ in range(runs)],
        "jouletrace --help (wall)": [_wall(["-m", "jouletrace", "--help"]) for _ in range(runs)],
        "jouletrace info --help (wall)": [_wall(["-m", "jouletrace", "info", "--help"]) for _ in range(runs)],
    }
    for name, v in rows.items():
        print(f"{name:36s} median {statistics.median(v):7.1f} ms  (min {min(v):.1f}, max {max(v):.1f}, {runs} runs)")
    for name, arg in (("--help", "'--help'"), ("info --help", "'info', '--help'")):
        print(f"jouletrace.* modules loaded by `jouletrace {name}`: {_loaded(cli.format(arg))}")
    print(f"jouletrace.* modules loaded by `import jouletrace`: {_loaded('import jouletrace')}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
