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
kept=""
for lib in $libs; do
  skip=no
  old_ifs=$IFS; IFS=:
  for dir in ${RUNTIME_PACKAGES_SKIP:-}; do
    case "$lib" in "$dir"/*) skip=yes ;; esac
  done
  IFS=$old_ifs
  [ "$skip" = yes ] || kept="$kept $lib"
done
# One dpkg query for all; merged /usr: ldd may name /lib/... while dpkg knows
# /usr/lib/... or the symlink's target, so each library is looked up under
# all three names.
names=""
for lib in $kept; do names="$names $lib $(realpath "$lib") /usr$lib"; done
# shellcheck disable=SC2086
owners=$(dpkg -S $names 2>/dev/null || true)
for lib in $kept; do
  real=$(realpath "$lib")
  if ! printf '%s\n' "$owners" | grep -q -e ": $lib\$" -e ": $real\$" -e ": /usr$lib\$"; then
    echo "runtime-packages.sh: no Debian package owns $lib" >&2
    exit 1
  fi
done
printf '%s\n' "$owners" | sed -n 's/^\([^:,]*\)[:,].*/\1/p' | sort -u
