#!/usr/bin/env bash
# Developer build: compiles the extension and the simulated GPU into a build
# folder outside the source tree (~/.cache/jouletrace/dev/<checkout>, or
# $JOULETRACE_BUILD_DIR) and places them inside python/jouletrace/, so
# `PYTHONPATH=python pytest` works without reinstalling. (Users and CI use `pip install .`.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
build=${JOULETRACE_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jouletrace/dev/$(basename "$root")-$(printf %s "$root" | md5sum | cut -c1-8)}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DJOULETRACE_WERROR=ON \
  -DPython_EXECUTABLE="$("$py" -c 'import sys; print(sys.executable)')" >/dev/null
cmake --build "$build"
mkdir -p "$root/python/jouletrace/_lib"
cp "$build"/_core*.so "$root/python/jouletrace/"
cp "$build/libjouletrace_simnvml.so" "$root/python/jouletrace/_lib/"
