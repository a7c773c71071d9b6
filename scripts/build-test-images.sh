#!/usr/bin/env bash
# Builds the end-to-end test images as OCI layouts under OUTDIR (default
# .cache/images), reproducibly (every mtime is $SOURCE_DATE_EPOCH):
#
#   OUTDIR/busybox   Debian's busybox-static (scripts/busybox-rootfs.sh)
#   OUTDIR/python    debootstrap --variant=minbase bookworm + python3-minimal
#
# Each layout holds one image tagged v1; test/e2e/registry_test.go pushes
# them to a local registry. The debootstrap tree is cached under
# .cache/rootfs/bookworm-python (about 1-3 minutes to build the first time;
# delete it to rebuild); reruns only re-pack what changed. Needs root (for
# debootstrap and true file owners) and the packages of
# scripts/install-deps.sh. Prints OUTDIR.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD
out=${1:-.cache/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=$repo/.cache/rootfs
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
GO=${GO:-go}

log() { echo "build-test-images: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "needs root (debootstrap, and image files owned by root)"
  exit 1
fi

# The Debian mirror apt uses (deb822 or one-line sources), unless given.
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$m" ]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  fi
  if [ -z "$m" ]; then
    log "no Debian mirror found in apt's sources; set DEBIAN_MIRROR"
    return 1
  fi
  echo "$m"
}

# pack NAME ROOTFS MKIMAGE-ARGS...: writes OUTDIR/NAME unless an identical
# build (same tree stamp, same arguments, same mkimage) is there.
pack() {
  local name=$1 rootfs=$2
  shift 2
  local stamp
  stamp=$( { find "$rootfs" -printf '%P %y %s %m %U %G %T@ %l\n' | LC_ALL=C sort
    echo "$SOURCE_DATE_EPOCH $*"; cat scripts/mkimage/*.go; } | sha256sum | cut -d' ' -f1)
  if [ -f "$out/$name/index.json" ] && [ "$(cat "$out/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  log "packing $name"
  rm -f "$out/$name.stamp"
  "$GO" run ./scripts/mkimage -rootfs "$rootfs" -layout "$out/$name" -tag v1 -exclude .complete "$@"
  echo "$stamp" > "$out/$name.stamp"
}

# (a) busybox: the offline root filesystem the other tests boot.
bb=$(./scripts/busybox-rootfs.sh "$cache/busybox")
pack busybox "$bb" \
  -env PATH=/usr/sbin:/usr/bin:/sbin:/bin -env IMG_VAR=from-image \
  -workdir /home/user -cmd '["sh", "-c", "echo default-cmd $IMG_VAR $(pwd)"]'

# (b) Debian bookworm minbase with python3-minimal.
deb=$cache/bookworm-python
if [ ! -f "$deb/.complete" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
  m=$(mirror) || exit 1
  log "debootstrap bookworm from $m into $deb (cached)"
  # A debootstrap that died may have left proc/sys mounted in its tree.
  awk -v d="$deb.tmp/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
  rm -rf "$deb" "$deb.tmp"
  mkdir -p "$deb.tmp"
  debootstrap --variant=minbase --include=python3-minimal --merged-usr \
    bookworm "$deb.tmp" "$m" >"$deb.tmp.log" 2>&1 || { tail -20 "$deb.tmp.log" >&2; exit 1; }
  # As small and as stable as practical: no docs, caches, logs, or
  # files that differ from run to run.
  rm -rf "$deb.tmp"/usr/share/{doc,man,info,locale,lintian,linda}/* \
    "$deb.tmp"/var/cache/apt/* "$deb.tmp"/var/lib/apt/lists/* \
    "$deb.tmp"/var/cache/debconf/*-old "$deb.tmp"/var/lib/dpkg/*-old \
    "$deb.tmp"/var/log/* "$deb.tmp"/tmp/* "$deb.tmp"/root/.bash_history
  find "$deb.tmp" -name '__pycache__' -type d -prune -exec rm -rf {} +
  : > "$deb.tmp/etc/machine-id"
  echo "bookworm-python $(date -u +%Y-%m-%dT%H:%M:%SZ) $m" > "$deb.tmp/.complete"
  rm -f "$deb.tmp.log"
  mv "$deb.tmp" "$deb"
fi
pack python "$deb" \
  -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -env GREETING=hello-from-image \
  -workdir /srv -cmd '["python3", "-c", "import os; print(os.getcwd(), os.environ[\"GREETING\"])"]'

echo "$out"
