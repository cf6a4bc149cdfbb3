#!/usr/bin/env bash
# Makes the frozen example volume of format version 3 (encrypted names,
# paged and inline regular files). Run once, from the repository root,
# after "make build", with a kmsfs whose "init" writes version 3:
#   make build && bash tests/testdata/example-v3/make.sh
# The result is checked in and must keep reading with every later kmsfs
# (tests/example_v3_test.go). It writes, in tests/testdata/example-v3:
#   cipher/        the backing directory
#   local.key      the key it was made with
#   SHA256SUMS     sha256sum of every regular file, seen through the mount
#   MANIFEST       every entry through the mount, one per line, sorted,
#                  fields separated by tabs:
#                    <type> <path>              d: directory, f: regular file
#                    l <path> <target>          a symlink and its target
#                    x <path> <name> <base64>   an extended attribute (user.)
#                                               and its value in standard base64
#   LAYOUT         regular files whose version-3 layout the tests check:
#                  <path> <inline|paged> <holes: yes|no> <hole groups: yes|no>
#   cipher-xattrs  the backing directory's extended attributes, which git
#                  does not keep: <backing path> <name> <base64 value>,
#                  tab-separated; tests put them back before reading cipher/
#   README         how it was made
# The write journal is left out of cipher/ (see below).
set -euo pipefail
out=tests/testdata/example-v3
kmsfs=$PWD/bin/kmsfs
work=$(mktemp -d /tmp/kmsfs-example-v3.XXXX)
m=$work/mnt
trap 'umount -l "$m" 2>/dev/null || true; rm -rf "$work"' EXIT
# Keep the trust record out of the real ~/.config.
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config
mkdir -p "$work/cipher" "$m" "$HOME"
"$kmsfs" init --key "local://$work/local.key" "$work/cipher"
"$kmsfs" mount "$work/cipher" "$m"

# Names of the lengths that matter: 176 bytes (the shortest long name) and
# 255 bytes (the longest), the latter in non-ASCII UTF-8.
n176=$(printf 'long-name-176-%0162d' 0)
n255=$(printf 'é%.0s' $(seq 127))x
[ "$(printf %s "$n176" | wc -c)" -eq 176 ] && [ "$(printf %s "$n255" | wc -c)" -eq 255 ]

# Inline files (at most 1987 bytes with the copy size init chose for one
# local key), the largest inline file and the smallest paged one.
printf 'hello from kmsfs format version 3\n' > "$m/hello.txt"
head -c 1987 /dev/zero | tr '\0' 'i' > "$m/inline-1987"
head -c 1988 /dev/zero | tr '\0' 'p' > "$m/paged-1988"
# Empty: no header (0 bytes), and a header only (written, truncated to 0).
: > "$m/empty"
printf 'x' > "$m/header-only"; truncate -s 0 "$m/header-only"
# A file that was paged and is truncated small: it stays paged.
seq -f 'was longer %g' 1 1000 > "$m/shrunk"; truncate -s 10 "$m/shrunk"
# Multi-group: 1.1 MB, 269 blocks of 4 KiB (group 0, group 1 and group 2).
seq -f 'line %06g of a multi-group file of format version 3' 1 21000 > "$m/multi.txt"
# Sparse: grown by truncate past two groups; data in blocks 2 and 250
# only. Blocks 0-68 but 2 are hole entries, group 1 (blocks 69-196) a
# hole group, and group 2 holds block 250 and hole entries.
truncate -s 1048581 "$m/sparse"
printf 'in block 2' | dd of="$m/sparse" bs=1 seek=8200 conv=notrunc status=none
printf 'in block 250' | dd of="$m/sparse" bs=1 seek=1024000 conv=notrunc status=none
# Punched: 40 blocks of data, blocks 3-9 punched (hole entries), and a
# partial punch in block 20 (rewritten with zeros).
seq -f 'punched file line %06g' 1 7000 | head -c 163840 > "$m/punched"
fallocate -p -o 12288 -l 28672 "$m/punched"
fallocate -p -o 82000 -l 100 "$m/punched"
printf 'a name of 176 bytes\n' > "$m/$n176"
printf 'a name of 255 bytes\n' > "$m/$n255"
printf 'café au lait\n' > "$m/café ☕ 日本語.txt"
mkdir -p "$m/dir/sub" "$m/empty-dir"
printf 'nested\n' > "$m/dir/sub/nested.txt"
ln "$m/hello.txt" "$m/dir/hard-link-to-hello"
ln -s dir/sub/nested.txt "$m/link-relative"
ln -s ../hello.txt "$m/dir/link-up"
ln -s "$(printf 'target-%.0s' $(seq 20))" "$m/dir/sub/$n255"
# A directory whose files are written before it is renamed and moved.
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
setfattr -n user.dir-note -v 'on a directory' "$m/dir"
setfattr -n user.on-sparse -v 'sparse and tagged' "$m/sparse"

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
"$kmsfs" umount "$m"

cd "$work/cipher"
find . ! -type l -print0 | while IFS= read -r -d '' p; do
	getfattr -h --absolute-names -d -m '^(user|trusted)\.' -e base64 "$p" | while IFS= read -r line; do
		case $line in '#'*|'') continue ;; esac
		v=${line#*=}
		printf '%s\t%s\t%s\n' "$p" "${line%%=*}" "${v#0s}"
	done
done | LC_ALL=C sort > "$work/cipher-xattrs"
cd - >/dev/null

# What the layout of some files must be (checked by the tests with the
# independent reader).
printf '%s\n' \
	'./hello.txt inline no no' \
	'./inline-1987 inline no no' \
	'./paged-1988 paged no no' \
	'./header-only inline no no' \
	'./shrunk paged no no' \
	'./multi-renamed.txt paged no no' \
	'./sparse paged yes yes' \
	'./punched paged yes no' > "$work/LAYOUT"

# The write journal holds nothing after a clean unmount (every slot is
# cleared) and a mount makes a new one: it is left out.
rm "$work/cipher/kmsfs.journal"
rm -rf "$out/cipher"
cp -a --no-preserve=xattr "$work/cipher" "$out/cipher"  # as git will have it
cp "$work/local.key" "$out/local.key"
cp "$work/SHA256SUMS" "$work/MANIFEST" "$work/LAYOUT" "$work/cipher-xattrs" "$out/"
{
	echo "original key URI: local://$work/local.key"
	echo "made by tests/testdata/example-v3/make.sh with $("$kmsfs" --version 2>/dev/null | head -1)"
	echo "git keeps neither the hard link (cipher/ holds two copies of its file),"
	echo "nor extended attributes (see cipher-xattrs), nor sparseness"
} > "$out/README"
