#!/usr/bin/env bash
# Makes the frozen example volume of format version 1. Run once, from the
# repository root, with a kmsfs of that version: bash tests/testdata/example-v1/make.sh
# The result is checked in and must keep reading with every later kmsfs.
set -euo pipefail
out=tests/testdata/example-v1
work=$(mktemp -d /tmp/kmsfs-example-v1.XXXX)
trap 'umount -l "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/kmsfs" ./cmd/kmsfs
mkdir -p "$work/cipher" "$work/mnt"
"$work/kmsfs" init --key "local://$work/local.key" "$work/cipher"
"$work/kmsfs" mount "$work/cipher" "$work/mnt"
m=$work/mnt
printf 'hello from kmsfs format version 1\n' > "$m/hello.txt"
: > "$m/empty"
printf 'x' > "$m/header-only"; truncate -s 0 "$m/header-only"
head -c 4096 /dev/zero | tr '\0' 'a' > "$m/block-4096"
head -c 4097 /dev/zero | tr '\0' 'b' > "$m/block-4097"
for i in $(seq 1 3000); do echo "line $i of a multi-block file"; done > "$m/multi.txt"
truncate -s 1048581 "$m/sparse"
printf 'in the middle' | dd of="$m/sparse" bs=1 seek=300000 conv=notrunc status=none
mkdir -p "$m/dir/sub"
printf 'nested\n' > "$m/dir/sub/nested.txt"
ln -s hello.txt "$m/link"
(cd "$m" && find . -type f | sort | xargs sha256sum) > "$work/manifest"
"$work/kmsfs" umount "$m"
rm -rf "$out/cipher"
cp -a "$work/cipher" "$out/cipher"
cp "$work/local.key" "$out/local.key"
cp "$work/manifest" "$out/SHA256SUMS"
echo "original key URI: local://$work/local.key" > "$out/README"
