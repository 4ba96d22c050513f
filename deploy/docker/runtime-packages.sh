#!/bin/sh
# Prints the Debian packages that own the shared libraries BINARY... link
# (what the runtime image must install), one per line, sorted. Libraries
# under a directory in $RUNTIME_PACKAGES_SKIP (colon-separated, e.g. a
# LibTorch copied into the image) are left out; any other library no
# package owns is an error.
#   deploy/docker/runtime-packages.sh build/cli/cohort build/learner/cohort-learner
set -eu
[ $# -gt 0 ] || { echo "usage: runtime-packages.sh BINARY..." >&2; exit 2; }
for bin in "$@"; do
  [ -x "$bin" ] || { echo "runtime-packages.sh: $bin is not an executable" >&2; exit 1; }
done
libs=$(ldd "$@" | awk '/=> \// {print $3}' | sort -u)
out=""
for lib in $libs; do
  skip=no
  old_ifs=$IFS; IFS=:
  for dir in ${RUNTIME_PACKAGES_SKIP:-}; do
    case "$lib" in "$dir"/*) skip=yes ;; esac
  done
  IFS=$old_ifs
  [ "$skip" = yes ] && continue
  # Merged /usr: ldd may name /lib/... while dpkg knows /usr/lib/... or the
  # symlink's target.
  pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(realpath "$lib")" 2>/dev/null ||
        dpkg -S "/usr$lib" 2>/dev/null || true)
  if [ -z "$pkg" ]; then
    echo "runtime-packages.sh: no Debian package owns $lib" >&2
    exit 1
  fi
  out="$out
$(echo "$pkg" | head -n1 | cut -d: -f1)"
done
echo "$out" | sed '/^$/d' | sort -u
