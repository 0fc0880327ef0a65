#!/usr/bin/env bash
# Builds infra/native/piece-hasher.c (a restore's verification: sha256 of each
# piece of a file, 16 pieces at once a core where the CPU has AVX-512; see the
# file's header and README, "How it works") into OUT, unless OUT was built
# from the same source. Usage: build-piece-hasher.sh OUT
set -euo pipefail
out=${1:?usage: build-piece-hasher.sh OUT}
src=$(cd "$(dirname "$0")/../native" && pwd)/piece-hasher.c
sum=$(sha256sum "$src" | cut -c1-64)
if [[ -x $out && $(cat "$out.sha256" 2>/dev/null) == "$sum" ]]; then
  exit 0
fi
mkdir -p "$(dirname "$out")"
# Built beside OUT and renamed over it: an agent starting one meanwhile gets the old or the new, whole.
gcc -O2 -Wall -Wextra -Werror -o "$out.new" "$src" -lcrypto -lpthread
mv -f "$out.new" "$out"
echo "$sum" >"$out.sha256"
echo "setup: built the piece hasher ($out)" >&2
