#!/bin/sh
# Rebuilds data/corpus/ (the character-level training text for
# examples/train_gpt) from Debian's `fortunes` package. Needs apt-get and
# dpkg (Debian or Ubuntu) and network access to a Debian mirror; it downloads
# the package into a temporary folder and installs nothing.
#
# Processing, per file: each "%" line (the fortune separator) becomes an empty
# line; overstrike sequences "<char><backspace>" (underlining, e.g. "_\bn")
# are removed, repeatedly, so that "__\b\bx" goes too; every other byte is
# kept as it is (the chosen files are plain ASCII). The output is
# deterministic for a given package version.
set -eu

FILES="science songs-poems"
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/data/corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cd "$tmp"
apt-get download fortunes >/dev/null
dpkg -x fortunes_*.deb pkg
version=$(dpkg-deb -f fortunes_*.deb Version)
mkdir -p "$out"
for f in $FILES; do
  LC_ALL=C sed -e 's/^%$//' -e ':a' -e 's/[^\x08]\x08//' -e 'ta' "pkg/usr/share/games/fortunes/$f" >"$out/$f.txt"
done
cp pkg/usr/share/doc/fortunes/copyright "$out/COPYRIGHT.fortunes"
echo "fortunes $version: wrote $(cd "$out" && wc -c $(for f in $FILES; do printf '%s.txt ' "$f"; done) | tail -1)"
