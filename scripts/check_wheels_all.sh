#!/usr/bin/env bash
# Every supported CPython's wheel, and the sdist built offline (by hand, not in CI:
# four zig builds take ~6-10 minutes on 2 cores; CI checks the python3 wheel with
# scripts/check_wheel.sh). Figures go to bench/RESULTS.md ("Wheels").
#
#   bash scripts/check_wheels_all.sh
#
#  1. scripts/build_wheel.sh --all --sdist: one manylinux_2_28 wheel per CPython
#     3.10-3.13 found (pyenv or PATH); it fails if one of the four is missing.
#  2. Each wheel: tag checked, installed into a fresh venv of its Python with a PATH
#     that holds no compiler, and the native parts' tests run against it from
#     outside the source tree.
#  3. The sdist: its build requirements downloaded into a local wheelhouse, then
#     built into a wheel with the network cut off (`unshare -n`, a network namespace
#     with no interfaces but loopback) and --no-index, installed and imported.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/jouletrace-wheels.XXXXXX")
trap 'rm -rf "$work"' EXIT
dist="$work/dist"

JOULETRACE_DIST="$dist" bash "$root/scripts/build_wheel.sh" --all --sdist
for v in 310 311 312 313; do
  ls "$dist"/jouletrace-*-cp$v-cp$v-manylinux_2_28_x86_64.whl >/dev/null \
    || { echo "check_wheels_all: no manylinux_2_28 wheel for cp$v" >&2; exit 1; }
done

# A PATH without a compiler: a folder of links to the few tools the tests run.
. "$root/scripts/compilerless_tools.sh"
tools="$work/bin"
compilerless_tools "$tools"

find_python() {  # $1 = 3.10 ... : the interpreter build_wheel.sh used
  local v=$1 cand
  for cand in "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" "$(command -v python"$v" || true)"; do
    if [ -x "$cand" ]; then echo "$cand"; return; fi
  done
  return 1
}

for v in 3.10 3.11 3.12 3.13; do
  py=$(find_python "$v")
  tag=cp${v/./}
  whl=$(ls "$dist"/jouletrace-*-"$tag"-"$tag"-manylinux_2_28_x86_64.whl)
  venv="$work/venv-$tag"
  "$py" -m venv "$venv"
  clean_path="$venv/bin:$tools"
  env -i HOME="$HOME" PATH="$clean_path" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --only-binary=:all: "$whl" "pytest>=7"
  (cd "$work" && env -i HOME="$HOME" PATH="$clean_path" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --rootdir "$root" -c "$root/pyproject.toml" \
    "$root/tests/test_sampler.py" "$root/tests/test_sim.py" "$root/tests/test_core_stub.py" \
    "$root/tests/test_packaging.py" 2>&1 | tail -1 | sed "s/^/check_wheels_all: $tag installed: /")
done

# The sdist, offline: build requirements (and what scikit-build-core asks for on top:
# cmake and ninja when the system has none) fetched first, then no network at all.
sdist=$(ls "$dist"/jouletrace-*.tar.gz)
house="$work/wheelhouse"
python3 -m pip download -q --disable-pip-version-check -d "$house" \
  "scikit-build-core>=0.10" "pybind11>=2.12" "nvidia-nvml-dev-cu12>=12.2" cmake ninja
venv="$work/venv-sdist"
python3 -m venv "$venv"
"$venv/bin/python" -m pip download -q --disable-pip-version-check -d "$house" numpy
unshare -n env PIP_NO_INDEX=1 PIP_FIND_LINKS="$house" \
  "$venv/bin/python" -m pip wheel -q --disable-pip-version-check -w "$work/offline" "$sdist"
unshare -n "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --find-links "$house" \
  "$work"/offline/jouletrace-*.whl
(cd "$work" && "$venv/bin/python" -c 'import jouletrace, jouletrace._core as c; print("check_wheels_all: sdist built offline:", jouletrace.__version__, c.__file__)')
echo "check_wheels_all: ok"
