#!/usr/bin/env bash
# deb-consistent.sh - the -dev packages .ci/setup installs are the ones debian/control's Build-Depends lists, and
# the reverse, so that CI and the package build against the same libraries.
set -euo pipefail
src=$1
setup=$(grep -oE '\blib[a-z0-9.+-]+-dev\b' "$src/.ci/setup" | sort -u)
control=$(sed -n '/^Build-Depends:/,/^[A-Z]/p' "$src/debian/control" | grep -oE '\blib[a-z0-9.+-]+-dev\b' | sort -u)
[ -n "$setup" ] && [ -n "$control" ] || { echo "no -dev packages found"; exit 1; }
if [ "$setup" != "$control" ]; then
  echo "-dev packages differ between .ci/setup and debian/control:"
  diff <(echo "$setup") <(echo "$control") || true
  exit 1
fi
echo "$(echo "$setup" | wc -l) -dev packages, the same in .ci/setup and debian/control"
