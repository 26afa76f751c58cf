#!/usr/bin/env bash
# vm/build.sh — owned by vm/ (the real-kernel harness). Builds the test VM's kernel + initramfs:
#   build/vm/kernel       Debian's stock linux-image-6.1.0-*-amd64 kernel (apt-get download + dpkg -x),
#                         decompressed to its ELF vmlinux for PVH boot
#   build/vm/initrd.img   busybox-static + the modules IPVS tests need + vm/init as /init
#   build/vm/kernel.env   KERNEL_RELEASE / KERNEL_PKG / KERNEL_VERSION, read by vm/run
# Usage: vm/build.sh [OUTDIR]   (default build/vm; `make vm` calls it only when an output is missing)
# Needs (Debian 12): apt, dpkg, kmod (depmod/modprobe), busybox-static, cpio, xz-utils (else a slower bzImage
# boot). Root only for `apt-get update` when the package lists are empty.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../build/vm}
mkdir -p "$out" && out=$(cd "$out" && pwd)
tmp=$(mktemp -d "$out/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log() { echo "vm/build: $*" >&2; }

for t in apt-get apt-cache dpkg depmod modprobe cpio; do
  command -v "$t" >/dev/null || { log "missing $t (apt-get install apt dpkg kmod cpio)"; exit 1; }
done
busybox=/bin/busybox    # must be busybox-static's: it runs as PID 1 with no libc in the initramfs
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q installed || { log "missing busybox-static"; exit 1; }

# 1. Newest Debian 6.1 kernel: the linux-image-amd64 metapackage points at it; fall back to sorting names.
pick() {  # (sed -n 1p, not head: no SIGPIPE under pipefail)
  { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p'
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null | cut -d' ' -f1 | sort -V | tail -1
  } | sed -n 1p
}
pkg=$(pick)
if [ -z "$pkg" ]; then log "no linux-image-6.1.0-*-amd64 in apt lists; running apt-get update"; apt-get update -qq; pkg=$(pick); fi
[ -n "$pkg" ] || { log "cannot find a linux-image-6.1.0-*-amd64 package"; exit 1; }
rel=${pkg#linux-image-}
log "kernel package $pkg"
(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
deb=$(ls "$tmp"/*.deb)
ver=$(dpkg-deb -f "$deb" Version)
dpkg -x "$deb" "$tmp/x"
depmod -b "$tmp/x" "$rel"

# 2. Module closure. FS and NET: insmod'ed by /init in this order (modprobe --show-depends resolves deps,
#    softdeps such as libcrc32c -> crc32c, and aliases); FS first (the host root needs it), NET in parallel
#    with the mounts. EXTRA: shipped for on-demand loading by the kernel through /sbin/modprobe (nf_tables
#    & co, sctp, ip_vs_ftp ...), never loaded unless something asks.
fs="virtio_pci 9pnet_virtio 9p"
net="crc32c_generic libcrc32c nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack ip_vs"
for s in rr wrr lc wlc lblc lblcr dh sh sed nq mh fo ovf twos; do net+=" ip_vs_$s"; done
net+=" dummy veth"
mods=$tmp/x/lib/modules/$rel
extra=$(cd "$mods" && find kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter kernel/net/sctp \
  -name '*.ko' -printf '%f\n' | sed 's/\.ko$//')
echo 'options dummy numdummies=0' >"$tmp/modprobe.conf"   # own config: the host's /etc/modprobe.d is irrelevant
closure() {  # module names -> "path [options]" lines, path relative to $mods, deps first, de-duplicated
  modprobe -d "$tmp/x" -S "$rel" -C "$tmp/modprobe.conf" -a --show-depends "$@" |
    sed -n "s|^insmod $mods/||p" | sed 's/ *$//' | awk '!seen[$1]++'
}
have=" $(cd "$mods" && find kernel -name '*.ko' -printf '%f ' | sed 's/\.ko / /g; s/-/_/g') "
for m in $net; do [[ $have == *" $m "* ]] || { log "no module $m in $rel (skipped)"; net=${net/ $m / }; }; done
# shellcheck disable=SC2086  # word splitting of the module lists is intended
{ closure $fs >"$tmp/fs.list"; closure $net | grep -vxFf "$tmp/fs.list" >"$tmp/net.list"; closure $extra >"$tmp/extra.list"; }

# 3. Initramfs tree: busybox + applet links, modules (+ depmod for busybox modprobe), /init.
r=$tmp/root
mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,host,etc/kipvs} "$r/lib/modules/$rel"
cp "$busybox" "$r/bin/busybox"
for a in $("$busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
ln -s ../bin/busybox "$r/sbin/modprobe"   # the kernel's request_module() runs /sbin/modprobe
unsign() {  # drop the appended signature (sig, 12-byte struct module_signature, 28-byte magic): the kernel then
  # skips the RSA check, which costs ~30 ms per module under TCG (it only taints; Debian does not force sigs)
  [ "$(tail -c 28 "$1" | head -c 27)" = "~Module signature appended~" ] || return 0
  local n; n=$(tail -c 32 "$1" | od -An -tu1 -N4 | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
  truncate -s $(( $(stat -c %s "$1") - n - 40 )) "$1"
}
cut -d' ' -f1 "$tmp"/{fs,net,extra}.list | sort -u | while read -r f; do
  mkdir -p "$r/lib/modules/$rel/$(dirname "$f")" && cp "$mods/$f" "$r/lib/modules/$rel/$f" && unsign "$r/lib/modules/$rel/$f"
done
cp "$mods"/modules.{order,builtin,builtin.modinfo} "$r/lib/modules/$rel/"
depmod -b "$r" "$rel"
cp "$tmp/fs.list" "$tmp/net.list" "$r/etc/kipvs/"
install -m 755 "$here/init" "$r/init"
(cd "$r" && find . | sort | cpio -o -H newc --quiet -R 0:0) >"$tmp/initrd.img"

# 4. Kernel image. Under TCG the bzImage costs ~4 s before Linux even starts (SeaBIOS + in-guest xz
#    decompression); the decompressed ELF vmlinux boots straight into its PVH entry (CONFIG_PVH=y) in <1 s.
#    Without xz-utils, fall back to the bzImage.
k=$tmp/x/boot/vmlinuz-$rel
payload=$(( ($(od -An -tu1 -j $((0x1f1)) -N1 "$k") + 1) * 512 + $(od -An -tu4 -j $((0x248)) -N4 "$k") ))
tail -c +$((payload + 1)) "$k" >"$tmp/payload.xz"
if ! { xz -dc --single-stream "$tmp/payload.xz" >"$tmp/kernel" && [ "$(head -c4 "$tmp/kernel")" = $'\x7fELF' ]; }; then
  log "cannot decompress the kernel (xz-utils missing?): booting the bzImage, ~4 s slower"; cp "$k" "$tmp/kernel"
fi
printf 'KERNEL_RELEASE=%s\nKERNEL_PKG=%s\nKERNEL_VERSION=%s\n' "$rel" "$pkg" "$ver" >"$tmp/kernel.env"
rm -f "$out/accel"   # vm/run re-probes KVM for the new kernel
mv "$tmp/kernel" "$tmp/initrd.img" "$out/" && mv "$tmp/kernel.env" "$out/"   # publish; kernel.env last
log "built $out: $rel ($ver), $(cat "$tmp"/{fs,net}.list | wc -l) boot + $(wc -l <"$tmp/extra.list") on-demand modules, initrd $(du -h "$out/initrd.img" | cut -f1)"
