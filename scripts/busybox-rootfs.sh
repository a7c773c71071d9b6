#!/usr/bin/env bash
# Builds a minimal root filesystem from Debian's busybox-static into DIR
# (default: .cache/rootfs/busybox) and prints DIR. Offline and reproducible:
# it only copies /bin/busybox and writes a few files. Idempotent.
set -euo pipefail

dir=${1:-.cache/rootfs/busybox}
bb=/bin/busybox
if [ ! -x "$bb" ] || ! file -L "$bb" 2>/dev/null | grep -q 'statically linked'; then
  if ! "$bb" 2>/dev/null | grep -q BusyBox || ldd "$bb" >/dev/null 2>&1; then
    echo "busybox-rootfs: need a static $bb: apt-get install busybox-static" >&2
    exit 1
  fi
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/.complete" ] && cmp -s "$bb" "$dir/bin/busybox"; then
  echo "$dir"
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,var/tmp,home/user}
chmod 1777 "$dir/tmp" "$dir/var/tmp"
chmod 0700 "$dir/root"
cp "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list-full); do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$dir/$(dirname "$applet")"
  ln -sf /bin/busybox "$dir/$applet"
done
cat > "$dir/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PW
cat > "$dir/etc/group" <<'GR'
root:x:0:
user:x:1000:
users:x:100:user
nogroup:x:65534:
GR
chown 1000:1000 "$dir/home/user" 2>/dev/null || true
echo "boxlite busybox" > "$dir/etc/issue"
touch "$dir/.complete"
echo "$dir"
