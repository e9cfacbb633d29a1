#!/usr/bin/env bash
# Builds the native tests of the ring, the sampler and the NVML source against
# the simulated GPU, and runs them under ASan+UBSan and under TSan. Any data
# race, leak or undefined behaviour fails the script (and so CI).
# Needs cmake, a C++17 compiler and nvml.h (pip install nvidia-nvml-dev-cu12).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
jobs=$(nproc 2>/dev/null || echo 2)
for san in "address,undefined" "thread"; do
  dir="$root/build-native-${san//,/-}"
  # The ASan build also makes the instrumented extension that tests/native/asan_python.sh runs
  # (one compilation of the core for both).
  python=OFF
  [ "$san" = "address,undefined" ] && python=ON
  cmake -S "$root" -B "$dir" -DJOULETRACE_PYTHON=$python -DJOULETRACE_TESTS=ON -DJOULETRACE_WERROR=ON \
    -DJOULETRACE_SANITIZE="$san" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython_EXECUTABLE="$("$py" -c "import sys; print(sys.executable)")" >/dev/null
  cmake --build "$dir" -j "$jobs" >/dev/null
  echo "== native tests under -fsanitize=$san"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  "$dir/test_ring" 2000000
  "$dir/test_sampler"
  "$dir/test_nvml_sim"
  "$dir/test_rapl"
done
echo "native tests: ok"
