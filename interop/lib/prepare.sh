# interop/lib/prepare.sh: sourced by run.sh. Owns first-use setup: Debian packages, the guest
# kernel (.deb → vmlinux + modules), the cached initramfs and the statically linked suites.
# Everything it produces lives under $CACHE (interop/.cache, git-ignored).

HOST_PACKAGES="qemu-system-x86 busybox-static nfs-common rpcbind kmod cpio gcc libc6-dev xz-utils"
GANESHA_PACKAGES="nfs-ganesha nfs-ganesha-vfs"
# Modules the guest loads, dependencies resolved by modprobe --show-depends, in this order.
GUEST_MODULES="virtio_pci virtio_net 9pnet_virtio 9p sunrpc grace lockd nfs nfs_acl nfsv3 dns_resolver nfsv4"
# Dynamic binaries copied into the initramfs together with the libraries ldd lists.
GUEST_BINARIES="/usr/sbin/mount.nfs /usr/sbin/rpc.statd /usr/sbin/sm-notify /usr/sbin/rpcbind /usr/sbin/rpcinfo /usr/sbin/showmount"

log() { printf '[interop %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

need_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Downloads the newest linux-image-6.1.0-NN-amd64 once; sets KVER, VMLINUX, KROOT.
prepare_kernel() {
    local kdir="$CACHE/kernel" deb name
    mkdir -p "$kdir"
    if [ ! -f "$kdir/kver" ]; then
        apt-get update -q >/dev/null
        name=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -n1)
        [ -n "$name" ] || die "no linux-image-6.1.0-NN-amd64 in apt-cache"
        log "downloading $name"
        rm -rf "$kdir/root" "$kdir"/*.deb
        (cd "$kdir" && apt-get download "$name" >/dev/null 2>&1) || die "apt-get download $name failed"
        deb=$(ls "$kdir"/*.deb | head -n1)
        dpkg -x "$deb" "$kdir/root"
        KVER=${name#linux-image-}
        depmod -b "$kdir/root" "$KVER"
        extract_vmlinux "$kdir/root/boot/vmlinuz-$KVER" "$kdir/vmlinux"
        rm -f "$deb"
        echo "$KVER" > "$kdir/kver"
    fi
    KVER=$(cat "$kdir/kver")
    KROOT="$kdir/root"
    VMLINUX="$kdir/vmlinux"
}

# The Debian bzImage carries an xz-compressed ELF; booting the ELF directly (PVH) saves ~4 s of TCG.
extract_vmlinux() {
    local img=$1 out=$2 pos
    pos=$(grep -abo $'\xfd7zXZ\x00' "$img" | head -n1 | cut -d: -f1) || true
    [ -n "$pos" ] || die "no xz stream in $img"
    tail -c +"$((pos + 1))" "$img" | xz -dc > "$out.tmp" 2>/dev/null || true
    [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = "7f454c46" ] || die "vmlinux extraction failed"
    mv "$out.tmp" "$out"
}

# Builds (once per input hash) the busybox initramfs; sets INITRD.
prepare_initramfs() {
    local hash tmp m f lib
    hash=$( { echo "$KVER $GUEST_MODULES $GUEST_BINARIES"; cat "$INTEROP/guest/init" "$INTEROP/lib/prepare.sh";
              dpkg-query -W busybox-static nfs-common rpcbind; } | sha256sum | cut -c1-16)
    INITRD="$CACHE/initramfs-$hash.cpio.gz"
    [ -f "$INITRD" ] && return 0
    log "building initramfs $INITRD"
    tmp=$(mktemp -d "$CACHE/initramfs.XXXXXX")
    mkdir -p "$tmp"/{bin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,mnt,share,sync,var/lib/nfs/sm,var/lib/nfs/sm.bak,lib/modules}
    ln -s usr/sbin "$tmp/sbin"
    ln -s ../run "$tmp/var/run"
    cp /bin/busybox "$tmp/bin/busybox"
    for f in $(/bin/busybox --list); do
        [ -e "$tmp/bin/$f" ] || ln -s busybox "$tmp/bin/$f"
    done
    : > "$tmp/modules.order"
    for m in $GUEST_MODULES; do
        modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r f; do
        cp "$f" "$tmp/lib/modules/"
        echo "/lib/modules/$(basename "$f")" >> "$tmp/modules.order"
    done
    for f in $GUEST_BINARIES; do
        mkdir -p "$tmp$(dirname "$f")"
        cp "$f" "$tmp$f"
        for lib in $(ldd "$f" | grep -o '/[^ ]*'); do
            mkdir -p "$tmp$(dirname "$lib")"
            cp -L "$lib" "$tmp$lib"
        done
    done
    # umount.nfs (mount.nfs under that name) sends MOUNT's UMNT before umount(2), as on a real client.
    ln -s mount.nfs "$tmp/usr/sbin/umount.nfs"
    cp /etc/netconfig /etc/services /etc/rpc /etc/protocols "$tmp/etc/"
    printf 'root:x:0:0:root:/root:/bin/sh\n_rpc:x:100:65534::/run/rpcbind:/bin/false\nstatd:x:101:65534::/var/lib/nfs:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\nuser:x:1000:1000::/tmp:/bin/sh\n' > "$tmp/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nuser:x:1000:\n' > "$tmp/etc/group"
    printf 'hosts: files\npasswd: files\ngroup: files\n' > "$tmp/etc/nsswitch.conf"
    chmod 755 "$tmp"
    chmod 1777 "$tmp/tmp"
    cp "$INTEROP/guest/init" "$tmp/init"
    chmod 755 "$tmp/init"
    (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$tmp"
    find "$CACHE" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -path "$INITRD" -mmin +60 -delete
}

# Compiles the suites statically (once per source hash); sets SUITE_BIN.
prepare_suites() {
    local hash s
    hash=$(cat "$INTEROP"/suites/*.c "$INTEROP"/suites/*.h "$INTEROP/lib/prepare.sh" | sha256sum | cut -c1-16)
    SUITE_BIN="$CACHE/suites-$hash"
    [ -f "$SUITE_BIN/.done" ] && return 0
    log "compiling suites into $SUITE_BIN"
    mkdir -p "$SUITE_BIN"
    for s in "$INTEROP"/suites/*.c; do
        s=$(basename "$s" .c)
        [ "$s" = common ] && continue
        gcc -static -O2 -Wall -Wextra -Werror -Wno-format-truncation -o "$SUITE_BIN/$s" "$INTEROP/suites/$s.c" \
            "$INTEROP/suites/common.c" || die "compiling $s.c failed"
    done
    touch "$SUITE_BIN/.done"
    find "$CACHE" -maxdepth 1 -name 'suites-*' ! -path "$SUITE_BIN" -mmin +60 -exec rm -rf {} +
}

# Builds target/release/hanfs-server when missing or older than any Rust source; sets HANFS_BIN.
prepare_hanfs() {
    HANFS_BIN="$REPO/target/release/hanfs-server"
    if [ -x "$HANFS_BIN" ] && [ -z "$(find "$REPO"/{state,raft,server,cli} "$REPO/Cargo.toml" "$REPO/Cargo.lock" \
            -newer "$HANFS_BIN" \( -name '*.rs' -o -name 'Cargo.*' \) -print -quit 2>/dev/null)" ]; then
        return 0
    fi
    log "building hanfs-server (cargo build --release -p hanfs-cli)"
    (cd "$REPO" && cargo build --release -q -p hanfs-cli) || die "cargo build failed"
    [ -x "$HANFS_BIN" ] || die "$HANFS_BIN missing after build"
}
