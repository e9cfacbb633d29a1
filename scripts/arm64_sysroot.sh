# Sourced by scripts/build_wheel.sh (--arch aarch64) and scripts/check_wheel_aarch64.sh.
#
# arm64_sysroot DIR PKG...  unpacks the Debian arm64 builds of PKG... into DIR: each is
# fetched with `apt-get download PKG:arm64` and extracted with `dpkg -x`, so nothing is
# installed on this machine and no amd64 package is replaced. Done once per package list
# (DIR/.packages records it). Needs apt with the arm64 architecture added; as root it adds
# it (`dpkg --add-architecture arm64 && apt-get update`), otherwise it says what to run.
arm64_sysroot() {
  local dir=$1
  shift
  local want="$*"
  if [ -f "$dir/.packages" ] && [ "$(cat "$dir/.packages")" = "$want" ]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
    echo "arm64_sysroot: apt-get and dpkg are needed to fetch Debian's arm64 packages ($want);" \
      "this needs a Debian or Ubuntu machine (or copy a sysroot made on one to $dir)" >&2
    return 1
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" != 0 ]; then
      echo "arm64_sysroot: apt does not know the arm64 architecture; run as root once:" \
        "dpkg --add-architecture arm64 && apt-get update" >&2
      return 1
    fi
    echo "arm64_sysroot: adding the arm64 architecture to apt (packages are only downloaded)" >&2
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  local debs="$dir.debs" p
  local pkgs=()
  for p in "$@"; do pkgs+=("$p:arm64"); done
  rm -rf "$dir" "$debs"
  mkdir -p "$debs"
  # apt-get download writes into the current folder; as root it warns that _apt cannot write there.
  if ! (cd "$debs" && apt-get download -q "${pkgs[@]}" 2>&1 | grep -v 'unsandboxed as root'; exit "${PIPESTATUS[0]}"); then
    # Stale package lists (a security update replaced a version): refresh once, as root.
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      (cd "$debs" && apt-get download -q "${pkgs[@]}" 2>&1 | grep -v 'unsandboxed as root'; exit "${PIPESTATUS[0]}") || {
        echo "arm64_sysroot: apt-get download failed for: ${pkgs[*]}" >&2
        return 1
      }
    else
      echo "arm64_sysroot: apt-get download failed for: ${pkgs[*]}; as root, run apt-get update and retry" >&2
      return 1
    fi
  fi
  mkdir -p "$dir"
  for p in "$debs"/*.deb; do dpkg -x "$p" "$dir"; done
  rm -rf "$debs"
  echo "$want" >"$dir/.packages"
}
