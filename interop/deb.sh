#!/usr/bin/env bash
# The Debian package's install test (./test.sh runs it): builds the .deb
# (cli/pkg/deb.sh), installs it with `dpkg -i` into a clean Debian bookworm
# root (debootstrap --variant=minbase, plus systemd and man-db so the unit and
# the pages are checked with the root's own tools), and checks:
#   - `dpkg -L hanfs` lists every file of the archive and each is there:
#     the binary, the unit, the conffile, every man page the installed binary
#     generates (gzipped, equal to what it generates), the three completions;
#   - /etc/hanfs/hanfs.toml is a registered conffile; the unit is not enabled;
#   - `hanfs-server --version` is the package's version, and `hanfs-server
#     check-config` accepts the shipped /etc/hanfs/hanfs.toml (as does the
#     unit's own ExecStartPre line, run as written);
#   - `systemd-analyze verify` of the installed unit prints nothing (no
#     running systemd: a chroot);
#   - `man --warnings -l` renders every installed page with no warning, and
#     `man -w` finds hanfs-server(8) and hanfs.toml(5) by name;
#   - the bash completion loads;
#   - `dpkg -i` over the installed package (the upgrade path) keeps an edited
#     /etc/hanfs/hanfs.toml;
#   - `dpkg -r` keeps only the conffile, `dpkg -P` removes that too, and
#     afterwards the root holds no file of the package's making outside dpkg's
#     and man-db's own databases (the overlay's upper layer is listed).
#
# The package is built as cli/pkg/deb.sh builds it, less the separate debug
# symbols package and with faster xz (`--no-dbgsym --strip --fast`): the same
# files, the binary stripped as in the release package, in seconds rather than
# the minutes splitting and compressing ~90 MB of debug info takes here. Test
# the release package itself with --deb target/debian/hanfs_*.deb.
#
# The debootstrapped root is cached read-only under /var/cache/hanfs-test/
# (rebuilt when the suite, variant, packages or mirror change, or with
# --refresh); each run installs into a fresh overlayfs layer on top of it, so
# every run starts from the same clean root. The first run's debootstrap takes
# about 1-2 min here; later runs skip it. Everything runs in a private mount
# namespace (unshare), so no mount outlives the script, even on kill -9; the
# scratch directory is removed on exit.
#
#   interop/deb.sh [--no-build] [--deb FILE] [--refresh]
#     --no-build  package the release binary already built (./test.sh)
#     --deb FILE  test this .deb instead of building one
#     --refresh   debootstrap the cached root again
# Needs root, debootstrap, and network access to a Debian mirror on the first
# run (HANFS_DEB_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail
self=$(realpath "$0")

SUITE=bookworm
INCLUDE=systemd,man-db
MIRROR=${HANFS_DEB_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=/var/cache/hanfs-test
# Bounds on the slow steps (seconds).
DEBOOTSTRAP_SECONDS_MAX=1200
CACHE_LOCK_SECONDS_MAX=1500
STEP_SECONDS_MAX=300

die() { printf 'deb.sh: FAIL: %s\n' "$*" >&2; exit 1; }
note() { printf 'deb.sh: %s\n' "$*"; }
elapsed() { echo $(($(date +%s) - $1)); }

build_args=()
deb=""
refresh=0
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build_args+=(--no-build) ;;
        --deb) deb=$(realpath "${2:?--deb FILE}"); shift ;;
        --refresh) refresh=1 ;;
        *) echo "usage: $0 [--no-build] [--deb FILE] [--refresh]" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$self")/.."

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
for tool in debootstrap unshare chroot dpkg-deb flock timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing (./test.sh installs debootstrap)"
done

# A private mount namespace: the overlay and /proc mounts below vanish with
# this process whatever happens to it.
if [ -z "${HANFS_DEB_PRIVATE_NS:-}" ]; then
    exec env HANFS_DEB_PRIVATE_NS=1 unshare --mount --propagation private -- bash "$self" \
        "${build_args[@]}" ${deb:+--deb "$deb"} $([ "$refresh" = 1 ] && echo --refresh)
fi

started=$(date +%s)

# --- the package --------------------------------------------------------------
if [ -z "$deb" ]; then
    t=$(date +%s)
    deb=$(bash cli/pkg/deb.sh "${build_args[@]}" -- --no-dbgsym --strip --fast | tail -n 1)
    note "built $deb in $(elapsed "$t") s"
fi
[ -f "$deb" ] || die "no package at $deb"
package=$(dpkg-deb -f "$deb" Package)
version=$(dpkg-deb -f "$deb" Version)
[ "$package" = hanfs ] || die "$deb is package $package, not hanfs"

# --- the cached clean root ----------------------------------------------------
mkdir -p "$CACHE_DIR"
base="$CACHE_DIR/debian-$SUITE-minbase"
key="suite=$SUITE variant=minbase include=$INCLUDE mirror=$MIRROR"
exec 9>"$CACHE_DIR/.lock"
flock -w "$CACHE_LOCK_SECONDS_MAX" 9 || die "another run holds $CACHE_DIR/.lock"
if [ "$refresh" = 1 ] || [ ! -d "$base" ] || [ "$(cat "$base.key" 2>/dev/null)" != "$key" ]; then
    t=$(date +%s)
    note "debootstrap $SUITE (minbase, with $INCLUDE) from $MIRROR into $base"
    rm -rf "$base" "$base.new" "$base.key"
    log="$CACHE_DIR/debootstrap.log"
    if ! timeout "$DEBOOTSTRAP_SECONDS_MAX" debootstrap --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$base.new" "$MIRROR" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -rf "$base.new"
        die "debootstrap failed or outran ${DEBOOTSTRAP_SECONDS_MAX} s (log: $log)"
    fi
    mv "$base.new" "$base"
    printf '%s\n' "$key" >"$base.key"
    note "debootstrap took $(elapsed "$t") s (cached for later runs)"
else
    note "using the cached root $base"
fi
# Others may read the cached root while this run uses it; none may rebuild it.
flock -s -w "$CACHE_LOCK_SECONDS_MAX" 9 || die "cannot share $CACHE_DIR/.lock"

# --- a fresh layer over it ----------------------------------------------------
work=$(mktemp -d /var/tmp/hanfs-deb.XXXXXX)
root="$work/root"
cleanup() {
    umount -R "$root" 2>/dev/null || umount -R -l "$root" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/upper" "$work/ovl" "$root"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/ovl" "$root"
mount -t proc proc "$root/proc"
# /run is a tmpfs on a booted system (systemd-analyze leaves a file there).
mount -t tmpfs -o mode=0755 tmpfs "$root/run"

# Runs a command in the root with a clean environment, bounded.
in_root() {
    timeout "$STEP_SECONDS_MAX" chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# --- install --------------------------------------------------------------------
cp "$deb" "$root/tmp/hanfs.deb"
t=$(date +%s)
out=$(in_root dpkg -i /tmp/hanfs.deb 2>&1) || die "dpkg -i failed: $out"
if grep -qiE 'warning|error' <<<"$out"; then die "dpkg -i warned: $out"; fi
note "dpkg -i $(basename "$deb") in $(elapsed "$t") s"

status=$(in_root dpkg-query -W -f '${Status} ${Version}' hanfs)
[ "$status" = "install ok installed $version" ] || die "after dpkg -i: status '$status'"

# Every file of the archive is listed by dpkg -L and present.
listed=$(in_root dpkg -L hanfs)
archived=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')
[ -n "$archived" ] || die "dpkg-deb -c lists no file in $deb"
while read -r file; do
    grep -qxF "$file" <<<"$listed" || die "dpkg -L hanfs does not list $file"
    [ -e "$root$file" ] || die "$file is listed but not installed"
done <<<"$archived"
files=$(grep -c . <<<"$archived")

# What the package must hold: the binary, unit, conffile, completions, and
# every page the installed binary generates, gzipped and equal to it.
for file in /usr/sbin/hanfs-server /usr/lib/systemd/system/hanfs.service /etc/hanfs/hanfs.toml \
    /usr/share/bash-completion/completions/hanfs-server /usr/share/zsh/vendor-completions/_hanfs-server \
    /usr/share/fish/vendor_completions.d/hanfs-server.fish /usr/share/doc/hanfs/copyright; do
    grep -qxF "$file" <<<"$archived" || die "the package lacks $file"
done
[ -x "$root/usr/sbin/hanfs-server" ] || die "/usr/sbin/hanfs-server is not executable"
in_root hanfs-server generate man /tmp/pages >/dev/null || die "hanfs-server generate man failed in the root"
pages=0
for page in "$root"/tmp/pages/*; do
    name=$(basename "$page")
    installed="/usr/share/man/man${name##*.}/$name.gz"
    grep -qxF "$installed" <<<"$archived" || die "the package lacks the page $installed"
    cmp -s "$page" <(gzip -dc "$root$installed") || die "$installed differs from what the installed binary generates"
    pages=$((pages + 1))
done
[ "$pages" -ge 2 ] || die "the installed binary generated $pages man pages"
in_root dpkg-query -W -f '${Conffiles}\n' hanfs | grep -q '^ /etc/hanfs/hanfs.toml ' ||
    die "/etc/hanfs/hanfs.toml is not a conffile"
if compgen -G "$root/etc/systemd/system/*.wants/hanfs.service" >/dev/null; then
    die "the unit was enabled on install"
fi
# cargo-deb's dh_installsystemd scripts: state recorded, stopped on removal.
for script in postinst prerm postrm; do
    grep -q 'deb-systemd-' "$root/var/lib/dpkg/info/hanfs.$script" 2>/dev/null ||
        die "the package's $script does not handle the systemd unit"
done
[ -e "$root/var/lib/systemd/deb-systemd-helper-enabled/hanfs.service.dsh-also" ] ||
    die "postinst did not record the unit's state (deb-systemd-helper update-state)"
note "dpkg -L: all $files files present ($pages man pages); conffile registered; unit not enabled"

# --- run it -------------------------------------------------------------------
want="hanfs-server ${version%-*}"
got=$(in_root hanfs-server --version) || die "hanfs-server --version failed"
[ "$got" = "$want" ] || die "hanfs-server --version: '$got', want '$want'"
out=$(in_root hanfs-server check-config /etc/hanfs/hanfs.toml 2>&1) ||
    die "check-config rejects the shipped /etc/hanfs/hanfs.toml: $out"
note "$got; check-config: $(head -n 1 <<<"$out")"
pre=$(sed -n 's/^ExecStartPre=//p' "$root/usr/lib/systemd/system/hanfs.service")
[ -n "$pre" ] || die "the unit has no ExecStartPre"
# shellcheck disable=SC2086 # the unit's command line, split as systemd splits this one
out=$(in_root $pre 2>&1) || die "the unit's ExecStartPre ($pre) fails: $out"

# --- the unit, without a running systemd ----------------------------------------
out=$(in_root systemd-analyze verify --man=no /usr/lib/systemd/system/hanfs.service 2>&1) ||
    die "systemd-analyze verify: $out"
[ -z "$out" ] || die "systemd-analyze verify printed: $out"
note "systemd-analyze verify hanfs.service: clean"

# --- man pages and completions ----------------------------------------------------
rendered=0
while read -r page; do
    text=$(in_root env MANWIDTH=80 MANPAGER=cat man --warnings -l "$page" 2>"$work/man.err") ||
        die "man -l $page failed: $(cat "$work/man.err")"
    [ ! -s "$work/man.err" ] || die "man -l $page warns: $(cat "$work/man.err")"
    grep -q '^NAME' <<<"$text" || die "man -l $page rendered no NAME section"
    rendered=$((rendered + 1))
done < <(grep -E '^/usr/share/man/man[0-9]/.*\.gz$' <<<"$archived")
[ "$rendered" = "$pages" ] || die "rendered $rendered pages, the binary generates $pages"
[ "$(in_root man -w hanfs-server)" = /usr/share/man/man8/hanfs-server.8.gz ] || die "man -w hanfs-server"
[ "$(in_root man -w 5 hanfs.toml)" = /usr/share/man/man5/hanfs.toml.5.gz ] || die "man -w 5 hanfs.toml"
in_root bash -c '. /usr/share/bash-completion/completions/hanfs-server && complete -p hanfs-server' >/dev/null ||
    die "the bash completion does not load"
note "man --warnings -l: $rendered pages render cleanly; man -w finds them; bash completion loads"

# --- reinstall over itself (the upgrade path): an edited config is kept ----------
printf '# edited by the admin\n' >>"$root/etc/hanfs/hanfs.toml"
out=$(in_root dpkg -i /tmp/hanfs.deb 2>&1 </dev/null) || die "dpkg -i over the installed package failed: $out"
tail -n 1 "$root/etc/hanfs/hanfs.toml" | grep -qx '# edited by the admin' || die "reinstalling replaced the edited conffile"
in_root hanfs-server check-config /etc/hanfs/hanfs.toml >/dev/null || die "check-config after the reinstall"
note "dpkg -i over itself keeps the edited /etc/hanfs/hanfs.toml"

# --- remove, then purge -----------------------------------------------------------
out=$(in_root dpkg -r hanfs 2>&1) || die "dpkg -r failed: $out"
status=$(in_root dpkg-query -W -f '${Status}' hanfs)
[ "$status" = "deinstall ok config-files" ] || die "after dpkg -r: status '$status'"
[ ! -e "$root/usr/sbin/hanfs-server" ] || die "dpkg -r left /usr/sbin/hanfs-server"
[ -f "$root/etc/hanfs/hanfs.toml" ] || die "dpkg -r removed the conffile (only purge may)"
out=$(in_root dpkg -P hanfs 2>&1) || die "dpkg -P failed: $out"
if in_root dpkg-query -W -f '${Status}' hanfs >/dev/null 2>&1; then
    die "after dpkg -P dpkg still knows hanfs: $(in_root dpkg-query -W -f '${Status}' hanfs)"
fi
[ ! -e "$root/etc/hanfs" ] || die "dpkg -P left /etc/hanfs"
# What is left in the overlay's upper layer: files and symlinks only (a
# deletion is a whiteout device; a directory may be copied up unchanged).
left=$(cd "$work/upper" && find . \( -type f -o -type l \) -printf '%P\n' |
    grep -vE '^(var/lib/dpkg/|var/log/|var/cache/man/|var/cache/debconf/|tmp/)' || true)
[ -z "$left" ] || die "after dpkg -P these remain: $left"
note "dpkg -r kept only the conffile; dpkg -P removed everything"

note "PASS ($package $version, $(elapsed "$started") s)"
