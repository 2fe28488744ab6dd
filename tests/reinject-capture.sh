#!/bin/sh
# reinject-capture.sh DIR [-f SENDER -- RCPT...] - a reinject command for the filter tests: keeps what it is given.
# Run N (1, 2, ...) writes DIR/N.eml (stdin) and DIR/N.args (its arguments, one per line). DIR/fail-N makes run N
# fail (exit 1, after reading its input); DIR/hang makes every run hang, as a stuck sendmail would.
dir=$1
shift
n=1
while [ -e "$dir/$n.args" ]; do n=$((n + 1)); done
printf '%s\n' "$@" > "$dir/$n.args"
cat > "$dir/$n.eml" || exit 75 # a full disk, as postdrop would report it
if [ -e "$dir/hang" ]; then
  echo $$ > "$dir/hung.pid"
  sleep 60
fi
if [ -e "$dir/fail-$n" ]; then
  echo "postdrop: warning: unable to look up public/pickup: No such file or directory" >&2
  exit 1
fi
exit 0
