#!/usr/bin/env bash
# man-check.sh - the built man pages render without a warning, as lintian and man-db read them (groff's warnings
# through man --warnings) and as mandoc's linter reads them. scdoc puts a .PP after every .SH/.SS and around
# indented lists; mandoc calls that "skipping paragraph macro", which is layout, not an error in the text, and is
# the one message ignored here.
set -euo pipefail
status=0
for page in "$@"; do
  out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null) || status=1
  if [ -n "$out" ]; then
    echo "$page: man --warnings:"
    echo "$out"
    status=1
  fi
  if command -v mandoc >/dev/null; then
    out=$(mandoc -T lint -W warning "$page" 2>&1 | grep -v 'skipping paragraph macro' || true)
    if [ -n "$out" ]; then
      echo "$page: mandoc -T lint:"
      echo "$out"
      status=1
    fi
  fi
  # the page has its NAME and renders to text
  text=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$page" 2>/dev/null)
  grep -q '^NAME' <<<"$text" || { echo "$page: no NAME section"; status=1; }
  echo "$page: checked"
done
exit $status
