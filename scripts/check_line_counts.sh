#!/usr/bin/env bash
# Fails when a non-test C++ source file (.cc, .h) of the tree has more than
# MAX lines (default 1000). Test files are exempt: *_test.cc, *_test.h,
# *_test_util.h, *_fuzz.cc and anything under a testdata/ directory.
#   scripts/check_line_counts.sh [SOURCE_DIR] [MAX]
set -euo pipefail
root="${1:-$(dirname "$0")/..}"
max="${2:-1000}"
cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked files plus new ones git does not ignore (build trees are ignored).
  files=$(git ls-files --cached --others --exclude-standard -- '*.cc' '*.h')
else
  files=$(find . -path './build*' -prune -o \( -name '*.cc' -o -name '*.h' \) -print | sed 's|^\./||')
fi
status=0
checked=0
while IFS= read -r f; do
  [[ -z "$f" || ! -f "$f" ]] && continue
  case "$f" in
    *_test.cc | *_test.h | *_test_util.h | *_fuzz.cc | */testdata/* | testdata/*) continue ;;
  esac
  checked=$((checked + 1))
  n=$(wc -l <"$f")
  if ((n > max)); then
    echo "$f: $n lines (more than $max; split it into units)" >&2
    status=1
  fi
done <<<"$files"
echo "checked $checked non-test source files against $max lines"
exit $status
