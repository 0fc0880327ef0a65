#!/usr/bin/env bash
# npm test's last step: vitest.config.ts's two projects as two vitest runs at
# once. 'exclusive' (criu, agents, namespaces, bridges) runs one file at a
# time, as those files share this machine's cores, disk and addresses;
# 'beside' (unit files, and integration files with only loopback servers of
# their own) runs meanwhile, one file at a time too. vitest itself runs a
# config's project groups one after another. The 'beside' run's report is
# printed after the other's, whole; the exit code is the exclusive run's,
# else the other's.
set -uo pipefail
cd "$(dirname "$0")/.."
beside_log=$(mktemp /tmp/hubshift-beside-XXXXXX.log)
beside=
# Stopped, by its pid, if this script ends first (a signal).
trap '[ -n "$beside" ] && kill "$beside" 2>/dev/null; rm -f "$beside_log"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
node_modules/.bin/vitest run --project beside > "$beside_log" 2>&1 &
beside=$!
node_modules/.bin/vitest run --project exclusive
exclusive_rc=$?
wait "$beside"
beside_rc=$?
beside=
echo
echo "the files run beside (unit files, and integration files with only loopback servers of their own):"
cat "$beside_log"
if [ "$exclusive_rc" -ne 0 ]; then exit "$exclusive_rc"; fi
exit "$beside_rc"
