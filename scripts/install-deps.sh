#!/usr/bin/env bash
# Installs the system packages BoxLite needs on Debian 12. Idempotent: a
# second run installs nothing new.
set -euo pipefail

pkgs=(
  qemu-system-x86      # the VMM
  qemu-utils           # qemu-img: qcow2 overlays
  linux-image-cloud-amd64  # guest kernel + virtio modules
  e2fsprogs            # mkfs.ext4 -d: root disks from directories
  busybox-static       # the default offline image
  kmod                 # modinfo at build time of the initramfs (tests)
  docker-registry      # a real local registry for the e2e image tests
  debootstrap          # the Debian test image (scripts/build-test-images.sh)
  util-linux           # setpriv: e2e tests run the runtime unprivileged
  zstd                 # the export benchmark's baseline
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
