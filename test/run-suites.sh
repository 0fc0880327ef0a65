#!/usr/bin/env bash
# npm test's last step: vitest.config.ts's two projects as two vitest runs at
# once. 'exclusive' (criu, agents, namespaces, bridges) runs one file at a
# time, as those files share this machine's cores, disk and addresses;
# 'beside' (unit files, and integration files with only loopback servers of
# their own) runs meanwhile, one file at a time too. vitest itself runs a
# config's project groups one after another. The 'beside' run's report is
# printed after the other's, whole; then, again, the failures of either run,
# so that the last lines of a long CI log say what failed. The exit code is
# the exclusive run's, else the other's.
set -uo pipefail
cd "$(dirname "$0")/.."
beside_log=$(mktemp /tmp/hubshift-beside-XXXXXX.log)
exclusive_log=$(mktemp /tmp/hubshift-exclusive-XXXXXX.log)
beside=
# Stopped, by its pid, if this script ends first (a signal).
trap '[ -n "$beside" ] && kill "$beside" 2>/dev/null; rm -f "$beside_log" "$exclusive_log"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
node_modules/.bin/vitest run --project beside > "$beside_log" 2>&1 &
beside=$!
node_modules/.bin/vitest run --project exclusive 2>&1 | tee "$exclusive_log"
exclusive_rc=${PIPESTATUS[0]}
wait "$beside"
beside_rc=$?
beside=
echo
echo "the files run beside (unit files, and integration files with only loopback servers of their own):"
cat "$beside_log"

# A failed run's report again, colours removed: vitest's account from its
# "Failed Tests" (or "Failed Suites", "Unhandled Errors") banner to the end,
# then the failed files and tests. Usage: report_failures NAME EXIT_CODE LOG.
report_failures() {
  [ "$2" -ne 0 ] || return 0
  local plain
  plain=$(sed 's/\x1b\[[0-9;]*m//g' "$3")
  echo
  echo "=== the '$1' run failed (exit $2); its failures again:"
  awk '/⎯ (Failed Tests|Failed Suites|Unhandled Errors?) /{on=1} on' <<<"$plain" | head -n 150
  grep -E '^ ❯ .*\([0-9]+ tests?|^ +× ' <<<"$plain" | head -n 40
}
report_failures exclusive "$exclusive_rc" "$exclusive_log"
report_failures beside "$beside_rc" "$beside_log"
if [ "$exclusive_rc" -ne 0 ]; then exit "$exclusive_rc"; fi
exit "$beside_rc"
