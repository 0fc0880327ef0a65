#!/usr/bin/env bash
# Builds criu 4.2.1 from Debian's source tarball with hubshift's patches
# (every infra/setup/criu/*.patch, in name order; each one's header says what
# it changes and why, with what was measured) into PREFIX/sbin/criu, and writes STAMP into
# PREFIX/STAMP once it is in place. Installs the build dependencies it lacks
# with apt. Usage: build-criu.sh PREFIX STAMP (see README, "Which criu").
set -euo pipefail
prefix=${1:?usage: build-criu.sh PREFIX STAMP}
stamp=${2:?usage: build-criu.sh PREFIX STAMP}
here=$(cd "$(dirname "$0")" && pwd)
version=4.2.1
tarball=criu_${version}.orig.tar.xz
# The upstream release as Debian ships it (criu_4.2.1-1.dsc, Checksums-Sha256).
sha256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
url=http://deb.debian.org/debian/pool/main/c/criu/$tarball
# The pool keeps a source only while a suite ships it; Debian's snapshot archive keeps the same file for good,
# named by its sha1. Either way the sha256 above is checked.
sha1=943aa42a53e9678fee0c8cb85c544afa2d331229
archived=https://snapshot.debian.org/file/$sha1

deps=(gcc make pkg-config libc6-dev curl patch xz-utils protobuf-c-compiler libprotobuf-c-dev
  libprotobuf-dev protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev
  libnftables-dev libbsd-dev uuid-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "build-criu: installing build dependencies: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! curl -fsS --retry 2 -o "$work/$tarball" "$url"; then
  echo "build-criu: $url is gone (Debian's pool moved on); fetching the same tarball from $archived" >&2
  curl -fsS --retry 2 -o "$work/$tarball" "$archived"
fi
echo "$sha256  $work/$tarball" | sha256sum -c --quiet -
tar -xf "$work/$tarball" -C "$work"
cd "$work/criu-$version"
# In name order (lazy-pages-from-tasks.patch applies on top of huge-page-fill.patch).
for p in "$here"/criu/*.patch; do
  patch -p1 --quiet <"$p"
done
# Without TLS (hubshift never passes --tls; page-server-guard.ts says why): gnutls and the eight libraries it
# loads took 3 ms of every criu run's start (criu --version 7.2 ms against 4.3 ms, 2026-12-03).
if ! make -j"$(nproc)" NO_GNUTLS=1 criu >"$work/build.log" 2>&1; then
  tail -n 30 "$work/build.log" >&2
  exit 1
fi
staging="$prefix.new"
rm -rf "$staging"
mkdir -p "$staging/sbin"
install -m 0755 criu/criu "$staging/sbin/criu"
printf '%s\n' "$stamp" >"$staging/STAMP"
rm -rf "$prefix"
mv "$staging" "$prefix"
echo "$prefix"
