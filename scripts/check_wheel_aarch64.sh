#!/usr/bin/env bash
# The aarch64 wheel (Grace-Hopper and other ARM servers), built and tested on an x86_64
# machine without ARM hardware:
#  1. builds it with `scripts/build_wheel.sh --arch aarch64` (zig, glibc 2.28, static C++
#     runtime, the target's CPython headers) unless JOULETRACE_PREBUILT_DIST holds it;
#  2. checks its tag (manylinux_2_28_aarch64), that its shared objects are AArch64 ELF files
#     needing nothing beyond glibc, and the newest glibc symbol they use;
#  3. makes an arm64 Debian 12 sysroot (python3.11 and the libraries it loads, from Debian's
#     arm64 packages: apt-get download + dpkg -x, nothing installed), and an environment in it
#     whose interpreter is that python3.11 run by qemu-aarch64-static (no binfmt_misc needed);
#  4. installs the wheel there with the arm64 pip, from a folder of aarch64 wheels from PyPI
#     (numpy, pytest, nvidia-ml-py), without an index;
#  5. under emulation: `import jouletrace`, `jouletrace info`, and the native parts' tests
#     (sampler and simulated GPU, CLI, stub, packaging) from outside the source tree.
# Fails on any error. Downloads are cached under ~/.cache/jouletrace/aarch64 (a warm run needs
# no network). Needs a Debian/Ubuntu machine (apt, dpkg) and qemu-user-static; as root it
# installs the latter and adds arm64 to apt's architectures, otherwise it says what to run.
#
#   bash scripts/check_wheel_aarch64.sh            # Python 3.11 (the version Debian 12 ships)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
v=3.11   # the arm64 interpreter is Debian 12's python3.11; the wheel must be its cp311
tag=cp${v/./}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/jouletrace/aarch64
work=$(mktemp -d "${TMPDIR:-/tmp}/jouletrace-aarch64.XXXXXX")
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
say() { echo "check_wheel_aarch64: $*"; }
fail() { echo "check_wheel_aarch64: $*" >&2; exit 1; }

hv=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$hv" = "$v" ] || fail "the wheel is tested with Debian 12's arm64 python$v; set PYTHON to a python$v (this is $hv)"

# qemu-aarch64-static runs the arm64 interpreter; binfmt_misc is not needed (called explicitly).
if ! command -v qemu-aarch64-static >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing qemu-user-static (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      qemu-user-static) >/dev/null || fail "could not install qemu-user-static with apt-get"
  else
    fail "qemu-aarch64-static not found: install qemu-user-static (as root: apt-get install qemu-user-static)"
  fi
fi

# 1-2. The wheel.
if [ -n "${JOULETRACE_PREBUILT_DIST:-}" ]; then
  mkdir -p "$work/dist" && cp "$JOULETRACE_PREBUILT_DIST"/jouletrace-*-"$tag"-*aarch64*.whl "$work/dist/"
else
  JOULETRACE_DIST="$work/dist" PYTHON="$py" bash "$root/scripts/build_wheel.sh" --arch aarch64
fi
whl=$(ls "$work"/dist/jouletrace-*-"$tag"-"$tag"-*.whl)
case "$(basename "$whl")" in
  *-manylinux_2_17_aarch64*|*-manylinux_2_27_aarch64*|*-manylinux_2_28_aarch64*) ;;
  *) fail "unexpected platform tag: $(basename "$whl")" ;;
esac
(mkdir "$work/x" && cd "$work/x" && "$py" -m zipfile -e "$whl" . \
  && n=0 && for so in $(find . -name '*.so*'); do
       n=$((n + 1))
       readelf -h "$so" | grep -q 'Machine: *AArch64' || fail "$so is not an AArch64 ELF file"
       if readelf -d "$so" | grep NEEDED | grep -vE 'lib(c|m|pthread|dl)\.so|ld-linux-aarch64'; then
         fail "$so needs a library beyond glibc"
       fi
       max=$(objdump -T "$so" | grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2 -n | tail -1)
       say "$so: AArch64, newest glibc symbol $max"
     done && [ "$n" = 2 ] || fail "expected 2 shared objects (_core and the simulated GPU) in the wheel")
t_build=$(date +%s)

# 3. The arm64 sysroot: Debian 12's python3.11 and what it and numpy load (libstdc++ and libgcc_s
# are for numpy; jouletrace links its C++ runtime in).
. "$root/scripts/arm64_sysroot.sh"
sysroot="$cache/sysroot"
arm64_sysroot "$sysroot" libc6 "python$v-minimal" "libpython$v-minimal" "libpython$v-stdlib" zlib1g libexpat1 \
  libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1 libcrypt1 libncursesw6 libtinfo6 libsqlite3-0 \
  libgcc-s1 libstdc++6
[ -x "$sysroot/usr/bin/python$v" ] || fail "no python$v in the arm64 sysroot $sysroot"

# 4. aarch64 wheels of the test dependencies, from PyPI (pure-Python ones are any-platform).
wheels="$cache/wheels-$tag"
deps=("numpy>=1.23" "pytest>=7" "nvidia-ml-py>=12.535" pip)
if [ ! -f "$wheels/.complete" ] || [ "$(cat "$wheels/.complete")" != "${deps[*]}" ]; then
  rm -rf "$wheels"
  "$py" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$wheels" \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version "$v" --implementation cp --abi "$tag" "${deps[@]}" 2>&1 | grep -v 'is ignored' || true
  ls "$wheels"/numpy-*aarch64*.whl >/dev/null 2>&1 || fail "could not download numpy's aarch64 wheel from PyPI"
  echo "${deps[*]}" >"$wheels/.complete"
fi

# An environment (pyvenv.cfg, bin/python3) whose interpreter is the arm64 python under qemu:
# qemu's -L serves the sysroot's files for absolute paths (/usr/lib/python3.11, the loader),
# and -0 passes the wrapper's own path as argv[0], so sys.executable is this wrapper and the
# tests' subprocesses and the console script run under emulation too.
make_env() {
  mkdir -p "$1/bin"
  cat >"$1/bin/python3" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$sysroot" -0 "\$0" "$sysroot/usr/bin/python$v" "\$@"
EOF
  chmod +x "$1/bin/python3"
  ln -s python3 "$1/bin/python"
  printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' "$v" >"$1/pyvenv.cfg"
}
# The arm64 pip (run from its wheel) installs, from the folder of wheels, no index. The
# dependencies go into a cached environment once (numpy takes ~30 s under emulation); each run
# copies it and installs the jouletrace wheel into the copy, which also checks that pip on
# aarch64 accepts the wheel's tag.
arm_pip() {
  local envd=$1
  shift
  (cd "$work" && "$envd/bin/python3" "$(ls "$wheels"/pip-*.whl)/pip" install -q --disable-pip-version-check \
    --no-index --root-user-action=ignore --no-warn-script-location --find-links "$wheels" "$@")
}
base="$cache/env-$tag"
want="$sysroot $(cd "$wheels" && ls | tr '\n' ' ')"
if [ ! -f "$base/.complete" ] || [ "$(cat "$base/.complete")" != "$want" ]; then
  rm -rf "$base"
  make_env "$base"
  arm=$("$base/bin/python3" -c 'import platform, sys; print(platform.machine(), sys.prefix)')
  [ "$arm" = "aarch64 $base" ] || fail "the emulated interpreter says '$arm', not 'aarch64 $base'"
  arm_pip "$base" "numpy>=1.23" "pytest>=7" "nvidia-ml-py>=12.535"
  echo "$want" >"$base/.complete"
fi
env_dir="$work/env"
cp -a "$base" "$env_dir"
rm -f "$env_dir/.complete"
arm_pip "$env_dir" "$whl[nvml]" "pytest>=7"
t_env=$(date +%s)

# 5. Under emulation, from outside the source tree; a PATH without a compiler.
. "$root/scripts/compilerless_tools.sh"
tools="$work/bin"
compilerless_tools "$tools"
ln -s "$(command -v qemu-aarch64-static)" "$tools/qemu-aarch64-static"
clean_path="$env_dir/bin:$tools"
cd "$work"
env -i HOME="$HOME" PATH="$clean_path" "$env_dir/bin/python3" -c '
import platform, jouletrace, jouletrace._core as core
f = jouletrace.__file__
assert "site-packages" in f and platform.machine() == "aarch64", (f, platform.machine())
print("check_wheel_aarch64: installed:", f, jouletrace.__version__, platform.machine(), core.__file__.rsplit("/", 1)[1])'
info=$(env -i HOME="$HOME" PATH="$clean_path" "$env_dir/bin/jouletrace" info)
echo "$info" | grep -A1 -E '^Sources:|^ +sim ' | sed 's/^/  info: /'
echo "$info" | grep -qE '^ +sim +usable ' || fail "jouletrace info does not list the simulated GPU as usable"
env -i HOME="$HOME" PATH="$clean_path" "$env_dir/bin/python3" -m pytest -q -p no:cacheprovider \
  --rootdir "$root" -c "$root/pyproject.toml" \
  "$root/tests/test_sampler.py" "$root/tests/test_sim.py" "$root/tests/test_cli.py" \
  "$root/tests/test_core_stub.py" "$root/tests/test_packaging.py"
t_end=$(date +%s)
say "wheel built and checked in $((t_build - t0)) s; arm64 environment made in $((t_env - t_build)) s;" \
  "tested under qemu in $((t_end - t_env)) s"
