#!/usr/bin/env bash
# The wheel as a cluster user gets it (scripts/test.sh runs this; about 2-3 minutes warm):
#  1. builds it with scripts/build_wheel.sh (zig, glibc 2.28, static C++ runtime) and the sdist;
#  2. checks its platform tag with auditwheel: manylinux_2_28_x86_64 or older, nothing grafted;
#  3. installs it into a fresh virtual environment, with a PATH that holds no compiler;
#  4. runs the tests of the native parts (sampler, simulated GPU, CLI, stub, packaging)
#     against the installed wheel, from outside the source tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/jouletrace-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)

# JOULETRACE_PREBUILT_DIST: a folder where build_wheel.sh --sdist already put them (scripts/test.sh).
if [ -n "${JOULETRACE_PREBUILT_DIST:-}" ]; then
  mkdir -p "$work/dist" && cp "$JOULETRACE_PREBUILT_DIST"/jouletrace-* "$work/dist/"
else
  JOULETRACE_DIST="$work/dist" PYTHON="$py" bash "$root/scripts/build_wheel.sh" --sdist
fi
whl=$(ls "$work"/dist/jouletrace-*.whl)
case "$(basename "$whl")" in
  *manylinux_2_17_x86_64*|*manylinux_2_27_x86_64*|*manylinux_2_28_x86_64*) ;;
  *) echo "check_wheel: unexpected platform tag: $(basename "$whl")" >&2; exit 1 ;;
esac
ls "$work"/dist/jouletrace-*.tar.gz >/dev/null
# What the shared objects need from the system: libc, libm, libpthread, libdl, ld.so only.
(cd "$work" && mkdir x && cd x && "$py" -m zipfile -e "$whl" . \
  && for so in $(find . -name '*.so*'); do
       if readelf -d "$so" | grep NEEDED | grep -vE 'lib(c|m|pthread|dl)\.so|ld-linux'; then
         echo "check_wheel: $so needs a library beyond glibc" >&2; exit 1
       fi
       max=$(objdump -T "$so" | grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2 -n | tail -1)
       echo "$so: newest glibc symbol $max"
     done)
t_build=$(date +%s)

# A PATH without a compiler: a folder of links to the few tools the tests run.
. "$root/scripts/compilerless_tools.sh"
tools="$work/bin"
compilerless_tools "$tools"
venv="$work/venv"
"$py" -m venv "$venv"
clean_path="$venv/bin:$tools"
for c in cc gcc g++ c++ clang cmake; do
  if PATH="$clean_path" command -v "$c" >/dev/null 2>&1; then
    echo "check_wheel: $c is on the install PATH" >&2; exit 1
  fi
done
env -i HOME="$HOME" PATH="$clean_path" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
  --only-binary=:all: "$whl[nvml]" "pytest>=7"
env -i HOME="$HOME" PATH="$clean_path" "$venv/bin/python" -c \
  'import jouletrace, sys; f = jouletrace.__file__; assert "site-packages" in f, f; print("installed:", f, jouletrace.__version__)'
# From outside the tree, so `import jouletrace` is the installed one (not python/).
cd "$work"
env -i HOME="$HOME" PATH="$clean_path" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  --rootdir "$root" -c "$root/pyproject.toml" \
  "$root/tests/test_sampler.py" "$root/tests/test_sim.py" "$root/tests/test_cli.py" \
  "$root/tests/test_core_stub.py" "$root/tests/test_packaging.py"
t_end=$(date +%s)
echo "check_wheel: built and audited in $((t_build - t0)) s; installed and tested in $((t_end - t_build)) s"
