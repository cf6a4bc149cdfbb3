#!/usr/bin/env bash
# Makes the frozen example volume of format version 2 (encrypted names).
# Run once, from the repository root, with a kmsfs of that version:
#   bash tests/testdata/example-v2/make.sh
# The result is checked in and must keep reading with every later kmsfs
# (tests/example_v2_test.go). It writes, in tests/testdata/example-v2:
#   cipher/        the backing directory
#   local.key      the key it was made with
#   SHA256SUMS     sha256sum of every regular file, seen through the mount
#   MANIFEST       every entry through the mount, one per line, sorted,
#                  fields separated by tabs:
#                    <type> <path>              d: directory, f: regular file
#                    l <path> <target>          a symlink and its target
#                    x <path> <name> <base64>   an extended attribute (user.)
#                                               and its value in standard base64
#   cipher-xattrs  the backing directory's extended attributes, which git
#                  does not keep: <backing path> <name> <base64 value>,
#                  tab-separated; tests put them back before reading cipher/
#   README         how it was made
# The write journal is left out of cipher/ (see below).
set -euo pipefail
out=tests/testdata/example-v2
work=$(mktemp -d /tmp/kmsfs-example-v2.XXXX)
m=$work/mnt
trap 'umount -l "$m" 2>/dev/null || true; rm -rf "$work"' EXIT
# Keep the trust record out of the real ~/.config.
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config
mkdir -p "$work/cipher" "$m" "$HOME"
go build -o "$work/kmsfs" ./cmd/kmsfs
"$work/kmsfs" init --key "local://$work/local.key" "$work/cipher"
"$work/kmsfs" mount "$work/cipher" "$m"

# Names of the lengths that matter: 176 bytes (the shortest long name) and
# 255 bytes (the longest), the latter in non-ASCII UTF-8.
n176=$(printf 'long-name-176-%0162d' 0)
n255=$(printf 'é%.0s' $(seq 127))x
[ "$(printf %s "$n176" | wc -c)" -eq 176 ] && [ "$(printf %s "$n255" | wc -c)" -eq 255 ]
# A symlink target of 3038 bytes, the longest kmsfs stores.
long_target=$(printf 'a-long-symlink-target/%.0s' $(seq 138))xx
[ "$(printf %s "$long_target" | wc -c)" -eq 3038 ]

printf 'hello from kmsfs format version 2\n' > "$m/hello.txt"
: > "$m/empty"
printf 'x' > "$m/header-only"; truncate -s 0 "$m/header-only"
for i in $(seq 1 3000); do echo "line $i of a multi-block file"; done > "$m/multi.txt"
truncate -s 1048581 "$m/sparse"
printf 'in the middle' | dd of="$m/sparse" bs=1 seek=300000 conv=notrunc status=none
printf 'a name of 176 bytes\n' > "$m/$n176"
printf 'a name of 255 bytes\n' > "$m/$n255"
printf 'café au lait\n' > "$m/café ☕ 日本語.txt"
mkdir -p "$m/dir/sub" "$m/empty-dir"
printf 'nested\n' > "$m/dir/sub/nested.txt"
printf 'long name in a subdirectory\n' > "$m/dir/sub/$n176"
ln "$m/hello.txt" "$m/dir/hard-link-to-hello"
ln -s dir/sub/nested.txt "$m/link-relative"
ln -s ../hello.txt "$m/dir/link-up"
ln -s "$long_target" "$m/link-long-target"
ln -s "$(printf 'target-%.0s' $(seq 20))" "$m/dir/sub/$n255"
# A directory whose files are written before it is renamed and moved to
# another parent: its ID goes with it.
mkdir -p "$m/to-rename/inner"
printf 'written before the rename\n' > "$m/to-rename/file.txt"
printf 'also before the rename\n' > "$m/to-rename/inner/$n255"
mv "$m/to-rename" "$m/dir/renamed"
mv "$m/multi.txt" "$m/multi-renamed.txt"
# Extended attributes.
printf 'tagged\n' > "$m/tagged.txt"
setfattr -n user.comment -v "a comment" "$m/tagged.txt"
setfattr -n user.empty "$m/tagged.txt"
setfattr -n 'user.café' -v 'thé' "$m/tagged.txt"
setfattr -n user.binary -v 0x00ff10ee "$m/tagged.txt"
setfattr -n "user.$(printf 'x%.0s' $(seq 162))" -v 'longest user. name' "$m/tagged.txt"
setfattr -n user.dir-note -v 'on a directory' "$m/dir"

cd "$m"
find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum > "$work/SHA256SUMS"
{
	find . -mindepth 1 \( -type l -printf 'l\t%p\t%l\n' \) -o \( -printf '%y\t%p\n' \)
	find . ! -type l -print0 | while IFS= read -r -d '' p; do
		getfattr -h --absolute-names -d -m '^user\.' -e base64 "$p" | while IFS= read -r line; do
			case $line in '#'*|'') continue ;; esac
			v=${line#*=}
			printf 'x\t%s\t%s\t%s\n' "$p" "${line%%=*}" "${v#0s}"
		done
	done
} | LC_ALL=C sort > "$work/MANIFEST"
cd - >/dev/null
"$work/kmsfs" umount "$m"

cd "$work/cipher"
find . ! -type l -print0 | while IFS= read -r -d '' p; do
	getfattr -h --absolute-names -d -m '^(user|trusted)\.' -e base64 "$p" | while IFS= read -r line; do
		case $line in '#'*|'') continue ;; esac
		v=${line#*=}
		printf '%s\t%s\t%s\n' "$p" "${line%%=*}" "${v#0s}"
	done
done | LC_ALL=C sort > "$work/cipher-xattrs"
cd - >/dev/null

# The write journal holds nothing after a clean unmount (every slot is
# cleared) and a mount makes a new one: it is left out (7 MiB of zeros).
rm "$work/cipher/kmsfs.journal"
rm -rf "$out/cipher"
cp -a --no-preserve=xattr "$work/cipher" "$out/cipher"  # as git will have it
cp "$work/local.key" "$out/local.key"
cp "$work/SHA256SUMS" "$work/MANIFEST" "$work/cipher-xattrs" "$out/"
{
	echo "original key URI: local://$work/local.key"
	echo "made by tests/testdata/example-v2/make.sh; git keeps neither the hard link"
	echo "(cipher/ holds two copies of its file) nor extended attributes (see cipher-xattrs)"
} > "$out/README"
