#!/usr/bin/env bash
# npm test's last step: the unit files beside the integration files, two vitest
# runs at once. vitest runs its projects' groups one after another, so one run
# cannot keep the integration files one at a time (they share this machine's
# cores, disk and namespaces) with the unit files going meanwhile. The unit
# run's report is printed after the integration run's, whole; the exit code is
# the integration run's, else the unit run's.
set -uo pipefail
cd "$(dirname "$0")/.."
unit_log=$(mktemp /tmp/hubshift-unit-XXXXXX.log)
unit=
# Stopped, by its pid, if this script ends first (a signal).
trap '[ -n "$unit" ] && kill "$unit" 2>/dev/null; rm -f "$unit_log"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
node_modules/.bin/vitest run --project unit > "$unit_log" 2>&1 &
unit=$!
node_modules/.bin/vitest run --project integration
integration=$?
wait "$unit"
unit_rc=$?
unit=
echo
echo "unit files (run beside the integration files):"
cat "$unit_log"
if [ "$integration" -ne 0 ]; then exit "$integration"; fi
exit "$unit_rc"
