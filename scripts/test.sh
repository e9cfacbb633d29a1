#!/usr/bin/env bash
# The test command (README, and .ci/run on a clean clone): makes a virtual
# environment, installs jouletrace with its test extras from this checkout,
# runs ruff and mypy, the native tests under ASan/UBSan and TSan, the sampler
# tests against the extension built with ASan/UBSan, pytest against the manylinux
# wheel, then tests that wheel installed without a compiler (check_wheel.sh).
# The other tests run in two workers; those that need the machine to themselves (marker `realtime`) last, alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
t_start=$(date +%s)
stage() { echo "== test.sh: $1 done at $(( $(date +%s) - t_start )) s"; }
venv=${JOULETRACE_VENV:-$root/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The suite runs against the wheel users install (manylinux_2_28, built by zig's clang with the
# C++ runtime linked in; scripts/build_wheel.sh), built once: check_wheel.sh below tests the same
# file again in a venv without a compiler.
dist=$(mktemp -d "${TMPDIR:-/tmp}/jouletrace-dist.XXXXXX")
trap 'rm -rf "$dist"' EXIT
# The dependencies of the [test,stream] extras (pyproject.toml) install while the wheel compiles:
# pip waits mostly on the disk, the build on the CPU. Installing the wheel with its extras below
# resolves them again from the wheel's own metadata (Python < 3.11, without tomllib: no head start).
"$venv/bin/python" - >"$dist/deps.txt" 2>/dev/null <<'EOF' || true
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + [d for e in ("test", "stream") for d in p["optional-dependencies"][e]]))
EOF
deps_pid=
if [ -s "$dist/deps.txt" ]; then
  "$venv/bin/python" -m pip install -q -r "$dist/deps.txt" & deps_pid=$!
fi
JOULETRACE_DIST="$dist" PYTHON="$venv/bin/python" bash scripts/build_wheel.sh --sdist >/dev/null
[ -z "$deps_pid" ] || wait "$deps_pid"
whl=$(ls "$dist"/jouletrace-*.whl)
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$whl"
"$venv/bin/python" -m pip install -q "$whl[test,stream]"
stage "wheel built, installed"
# The HTML report test renders the page in a real headless browser. As root on a Debian/Ubuntu
# machine without one (CI on a fresh clone), install Chromium once; no recommends keeps it quick.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null \
    && ! command -v chromium-browser >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
    >/dev/null || echo "warning: could not install chromium; the HTML report test will be skipped" >&2
fi
# A real Prometheus server for tests/test_prometheus.py (skipped, saying why, without it).
if ! command -v prometheus >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/dev/null || echo "warning: could not install prometheus; the Prometheus server test will be skipped" >&2
fi
# Lint and types (configuration in pyproject.toml).
"$venv/bin/ruff" check python tests bench
"$venv/bin/mypy"
stage "services, ruff, mypy"
PATH="$venv/bin:$PATH" PYTHON="$venv/bin/python" bash tests/native/run.sh
stage "native tests (ASan/UBSan, TSan)"
# Then the CPU-bound rest at once, filling both CPUs: every test but those marked `realtime` in two
# workers (pytest-xdist), and beside them, one after another, the extension under ASan/UBSan
# (the sampler tests), the wheel check and the benchmarks once. Real-time tests whose claims hold
# under load (their bounds carry the recording's own quality) run there too.
# The `realtime` tests come last, one at a time, with nothing else running: their claims need a
# recording made on time (tests/test_attribution_realtime.py's counts, conditional on a measured
# quality) or a main thread whose busy-waits keep their length (measure()); CPU-bound work beside
# them, even at nice 19, costs them that (measured; see pyproject.toml).
# A run that selects nothing ("$@" naming other tests) is not an error.
ok() { "$@" || { r=$?; [ "$r" = 5 ] || return "$r"; }; }  # 5: no test selected
side_log="$dist/side.log"
(
  set -e
  # The extension itself under ASan/UBSan, through the sampler tests.
  PATH="$venv/bin:$PATH" PYTHON="$venv/bin/python" bash tests/native/asan_python.sh
  echo "== test.sh: extension under ASan/UBSan done at $(( $(date +%s) - t_start )) s"
  # The wheel as cluster users get it: manylinux_2_28, installed without a compiler, the native
  # parts' tests run against it. JOULETRACE_SKIP_WHEEL=1 skips it (e.g. a quick local run).
  if [ "${JOULETRACE_SKIP_WHEEL:-0}" != 1 ]; then
    JOULETRACE_PREBUILT_DIST="$dist" PYTHON="$venv/bin/python" bash scripts/check_wheel.sh
    echo "== test.sh: wheel done at $(( $(date +%s) - t_start )) s"
  fi
  # Benchmarks once without timing, so their code cannot rot; figures come from bench/ runs.
  ok "$venv/bin/python" -m pytest -q -p no:cacheprovider bench --benchmark-disable -m "not slow and not realtime"
  echo "== test.sh: bench once (not real-time) done at $(( $(date +%s) - t_start )) s"
) >"$side_log" 2>&1 &
side_pid=$!
main=0
ok "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 -n 2 -m "not realtime" "$@" || main=$?
stage "pytest (all but the realtime-marked tests, 2 workers)"
side=0
wait "$side_pid" || side=$?
cat "$side_log"
stage "beside it: extension under ASan/UBSan, wheel, bench once"
[ "$main" = 0 ] || exit "$main"
[ "$side" = 0 ] || exit "$side"
ok "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 -m realtime "$@"
stage "pytest (realtime-marked tests, alone, one at a time)"
ok "$venv/bin/python" -m pytest -q -p no:cacheprovider bench --benchmark-disable -m "realtime and not slow"
stage "bench once (real-time)"
