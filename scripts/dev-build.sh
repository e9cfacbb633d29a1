#!/usr/bin/env bash
# Developer build: compiles the extension and the simulated GPU into build/dev
# and places them inside python/jouletrace/, so `PYTHONPATH=python pytest`
# works without reinstalling. (Users and CI use `pip install .`.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
cmake -S "$root" -B "$root/build/dev" -G Ninja -DCMAKE_BUILD_TYPE=Release -DJOULETRACE_WERROR=ON \
  -DPython_EXECUTABLE="$("$py" -c 'import sys; print(sys.executable)')" >/dev/null
cmake --build "$root/build/dev"
mkdir -p "$root/python/jouletrace/_lib"
cp "$root"/build/dev/_core*.so "$root/python/jouletrace/"
cp "$root/build/dev/libjouletrace_simnvml.so" "$root/python/jouletrace/_lib/"
