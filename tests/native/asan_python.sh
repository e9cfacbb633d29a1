#!/usr/bin/env bash
# The Python extension itself under ASan+UBSan: builds _core and the simulated
# GPU with -fsanitize=address,undefined (the ASan build of tests/native/run.sh,
# build-native-address-undefined/; a no-op when run.sh built it), stages them
# beside a copy of the Python package, and runs tests/test_sampler.py and the
# fork/address-space tests with libasan preloaded (CPython is not built with
# ASan). Leak detection is off: CPython keeps its allocations at exit by design.
# Any invalid access or undefined behaviour in the native code fails the script.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
jobs=$(nproc 2>/dev/null || echo 2)
# The ASan/UBSan build of tests/native/run.sh (same options: a no-op when run.sh has built it).
dir="$root/build-native-address-undefined"
cmake -S "$root" -B "$dir" -DJOULETRACE_PYTHON=ON -DJOULETRACE_TESTS=ON -DJOULETRACE_WERROR=ON \
  -DJOULETRACE_SANITIZE="address,undefined" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython_EXECUTABLE="$("$py" -c "import sys; print(sys.executable)")" >/dev/null
cmake --build "$dir" -j "$jobs" --target _core jouletrace_simnvml >/dev/null
stage="$dir/stage"
rm -rf "$stage" && mkdir -p "$stage"
cp -r "$root/python/jouletrace" "$stage/"
find "$stage/jouletrace" -name '*.so' -delete
mkdir -p "$stage/jouletrace/_lib"
cp "$dir"/_core*.so "$stage/jouletrace/"
cp "$dir/libjouletrace_simnvml.so" "$stage/jouletrace/_lib/"
libasan=$(${CXX:-c++} -print-file-name=libasan.so)
# libstdc++ too: the interpreter does not link it, and ASan's __cxa_throw
# interceptor must find it at start-up or the first C++ exception aborts.
libasan="$libasan:$(${CXX:-c++} -print-file-name=libstdc++.so)"
echo "== Python extension under -fsanitize=address,undefined (LD_PRELOAD=$libasan)"
cd "$root"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:handle_segv=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
LD_PRELOAD="$libasan" PYTHONPATH="$stage" "$py" -m pytest -q -p no:cacheprovider tests/test_sampler.py "$@"
LD_PRELOAD="$libasan" PYTHONPATH="$stage" "$py" -m pytest -q -p no:cacheprovider \
  tests/test_hardening_process.py -k "fork or address" "$@"
echo "python extension under ASan/UBSan: ok"
