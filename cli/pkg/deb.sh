#!/usr/bin/env bash
# Builds the Debian package `hanfs` (target/debian/hanfs_VERSION-1_ARCH.deb)
# with cargo-deb: the release binary, the systemd unit (pkg/hanfs.service),
# the example config as the conffile /etc/hanfs/hanfs.toml, and the man pages
# and bash/zsh/fish completions, which this script first writes into
# cli/pkg/gen/ with the binary being packaged (`hanfs-server generate`), so
# they describe exactly that binary. The metadata is [package.metadata.deb]
# in cli/Cargo.toml.
#
#   cli/pkg/deb.sh              build the release binary, then the package
#   cli/pkg/deb.sh --no-build   package the release binary already built
#                               (./test.sh: the one its tests ran)
#   cli/pkg/deb.sh [--no-build] -- ARGS...   ARGS go to cargo deb (e.g.
#                               --no-dbgsym --strip --fast: no .ddeb, lighter xz)
#
# Needs cargo-deb (pinned below; `cargo install --locked cargo-deb@VERSION`)
# and dpkg-shlibdeps (Debian package dpkg-dev) for the $auto dependencies.
# Prints the .deb's path as its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The cargo-deb version ./test.sh installs and this script expects.
CARGO_DEB_VERSION=3.8.0

build=1
cargo_deb_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --) shift; cargo_deb_args=("$@"); break ;;
        *) echo "usage: $0 [--no-build] [-- CARGO_DEB_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done

have=$(cargo deb --version 2>/dev/null || true)
if [ "$have" != "$CARGO_DEB_VERSION" ] && [ "$have" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "deb.sh: cargo-deb $CARGO_DEB_VERSION is needed (found: ${have:-none}):" \
        "cargo install --locked cargo-deb@$CARGO_DEB_VERSION" >&2
    exit 1
fi
command -v dpkg-shlibdeps >/dev/null || { echo "deb.sh: dpkg-shlibdeps is missing (apt-get install dpkg-dev)" >&2; exit 1; }

target=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target/release/hanfs-server"
if [ "$build" = 1 ]; then
    cargo build --release --locked -p hanfs-cli
fi
[ -x "$binary" ] || { echo "deb.sh: $binary is missing: build it (cargo build --release -p hanfs-cli)" >&2; exit 1; }

gen=cli/pkg/gen
rm -rf "$gen"
"$binary" generate man "$gen/man"
"$binary" generate completions "$gen/completions"

# --no-build: cargo-deb takes target/release/hanfs-server as it is.
out=$(cargo deb --locked --no-build -p hanfs-cli "${cargo_deb_args[@]}" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$out" | grep -v '^/' >&2 || true
deb=$(printf '%s\n' "$out" | grep '\.deb$' | tail -n 1)
[ -f "$deb" ] || { printf 'deb.sh: no .deb in the output of cargo deb:\n%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$deb"
