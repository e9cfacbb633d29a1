# Sourced by scripts/check_wheel.sh and scripts/check_wheels_all.sh:
# compilerless_tools DIR makes DIR a folder of links to the few tools the wheel's
# tests run, for a PATH that holds no compiler.
compilerless_tools() {
  mkdir -p "$1"
  local t p
  for t in sh bash env cat ls uname readelf sleep true rm mkdir; do
    p=$(command -v "$t" || true)
    [ -n "$p" ] && ln -s "$p" "$1/$t"
  done
  return 0
}
