#!/usr/bin/env bash
# Installs Debian unstable's criu and the libraries it needs into a private
# prefix, run through the prefix's own loader, without touching the system's
# libc (see README, "Which criu"). Usage: install-criu-sid.sh PREFIX
set -euo pipefail
prefix=${1:?usage: install-criu-sid.sh PREFIX}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" >"$work/sources.list"
apt_opts=(
  -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache"
  -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" update -qq
# The dependency closure of criu as unstable defines it (status=/dev/null makes
# apt consider nothing installed, so the closure is complete).
mapfile -t pkgs < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | sort -u)
(cd "$work/debs" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null)
staging="$prefix.new"
rm -rf "$staging"
mkdir -p "$staging"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$staging"; done
dpkg-deb -f "$work"/debs/criu_*.deb Version >"$staging/CRIU_VERSION"
rm -rf "$prefix"
mv "$staging" "$prefix"
echo "$prefix"
