#!/usr/bin/env bash
# The test command (README, and .ci/run on a clean clone): makes a virtual
# environment, installs jouletrace with its test extras from this checkout,
# runs ruff and mypy, the native tests under ASan/UBSan and TSan, the sampler
# tests against the extension built with ASan/UBSan, pytest against the manylinux
# wheel, then tests that wheel installed without a compiler (check_wheel.sh).
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
JOULETRACE_DIST="$dist" PYTHON="$venv/bin/python" bash scripts/build_wheel.sh --sdist >/dev/null
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
# The extension itself under ASan/UBSan, through the sampler tests.
PATH="$venv/bin:$PATH" PYTHON="$venv/bin/python" bash tests/native/asan_python.sh
stage "extension under ASan/UBSan"
# Benchmarks once without timing, so their code cannot rot; figures come from bench/ runs.
"$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
stage "pytest"
"$venv/bin/python" -m pytest -q -p no:cacheprovider bench --benchmark-disable -m "not slow"
stage "bench once"
# The wheel as cluster users get it: manylinux_2_28, installed without a compiler, the native
# parts' tests run against it. JOULETRACE_SKIP_WHEEL=1 skips it (e.g. a quick local run).
if [ "${JOULETRACE_SKIP_WHEEL:-0}" != 1 ]; then
  JOULETRACE_PREBUILT_DIST="$dist" PYTHON="$venv/bin/python" bash scripts/check_wheel.sh
  stage "wheel"
fi
