#!/usr/bin/env bash
# Runs every hanfs test: formatting and clippy, unit and property tests, the
# loopback integration tests (including Debian's rpcinfo/showmount and
# libnfs-utils against the real binary), the port-111 tests in a network
# namespace of their own, the Debian package installed into a clean Debian
# root (interop/deb.sh), and the real Linux kernel client in QEMU guests
# (interop/ci.sh: basic, special, subdir and lock suites; interop/failover.sh:
# ten failovers under a writing client; killloop, lockfailover and a 10-fault
# soak). Installs the Debian packages it needs when they are missing, the
# rustfmt and clippy components and cargo-deb (needs root: CI runs as root).
#
# Builds and tests with the feature hanfs-state/invariants: the full state
# consistency walk after every apply (state/src/invariants.rs), in every test
# and in the binary the QEMU runs use. A test that cannot run here fails with
# its reason; none passes by skipping.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# One feature set for the build and every test run, so nothing builds twice.
FEATURES=hanfs-state/invariants

# Tools the tests drive: command -> Debian package.
missing=()
for pair in rpcinfo:rpcbind rpcbind:rpcbind showmount:nfs-common nfs-ls:libnfs-utils ip:iproute2 unshare:util-linux \
    mkfs.ext4:e2fsprogs losetup:mount systemd-analyze:systemd man:man-db debootstrap:debootstrap \
    dpkg-shlibdeps:dpkg-dev; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
# The /metrics test parses the exposition with the python prometheus_client
# parser, from Debian's python (tests/metrics.rs runs /usr/bin/python3).
if ! /usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    missing+=(python3-prometheus-client)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    step "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        step "installing the $component component"
        rustup component add "$component"
    fi
done

# cargo-deb from crates.io, at the version cli/pkg/deb.sh pins.
cargo_deb_version=$(sed -n 's/^CARGO_DEB_VERSION=//p' cli/pkg/deb.sh)
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $cargo_deb_version" ]; then
    step "installing cargo-deb $cargo_deb_version"
    cargo install --locked "cargo-deb@$cargo_deb_version"
fi

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "clippy (every target, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (release, $FEATURES)"
cargo build --release --locked --workspace --features "$FEATURES"

step "unit, property and integration tests"
cargo test --release --locked --workspace --features "$FEATURES"

# The #[ignore]d tests of the integration binary need port 111 free, which a
# host's rpcbind (the one installed above) usually holds. They run here, in a
# network namespace of their own where only loopback exists and nothing
# listens; cargo runs offline (everything was fetched by the steps above).
ns="hanfs-test-$$"
step "port-111 tests (rpcinfo, showmount, a system rpcbind) in network namespace $ns"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip -n "$ns" link set lo up
ip netns exec "$ns" cargo test --release --locked --offline --workspace --features "$FEATURES" \
    --test integration -- --ignored
ip netns del "$ns"
trap - EXIT

# The release binary tested above, packaged (cargo deb) and installed with
# dpkg -i into a clean debootstrapped Debian root (cached under
# /var/cache/hanfs-test/; about a minute the first time): the files, the
# conffile, check-config on the shipped example, systemd-analyze verify of the
# unit, man -l of every page, then dpkg -r and dpkg -P.
step "Debian package: build, install in a clean Debian root, check, purge (interop/deb.sh)"
bash interop/deb.sh --no-build

step "real Linux kernel client (QEMU): basic, special, subdir and lock suites (two guests)"
bash interop/ci.sh

# Ten kill -9 failovers under a kernel client that keeps writing: the check is
# no error and no ESTALE in the guest. The stall is reported, not asserted
# (these machines are noisy); --stall-max only bounds a hung takeover.
step "real Linux kernel client (QEMU): failover"
bash interop/failover.sh --rounds 10 --stall-max 60

# The basic and special suites in a loop while the active is killed -9 every
# 15 s: a retransmission after a takeover must get the original answer (the
# replicated DRC intent), never EEXIST/ENOENT. Three kills here; the 20-kill
# run is `interop/killloop.sh` (interop/README.md).
step "real Linux kernel client (QEMU): basic and special under kill -9 every 15 s"
bash interop/killloop.sh --kills 3 --interval 15

# Locks across kill -9 of the active, two guests: A's lock is still enforced
# by the new active, B's F_SETLKW is granted by the new active's GRANTED
# callback, a whole one-guest lock suite survives a kill in its middle, and
# no DENIED_GRACE_PERIOD is ever sent (transparent recovery).
step "real Linux kernel client (QEMU): locks across failover"
bash interop/lockfailover.sh

# The fault soak, short: 10 seeded faults, every kind at least once (kill -9,
# SIGSTOP 5 s, partition from the peers, power-off, witness down, the state
# directory's disk full), under two kernel-client guests (records written with
# COMMIT and read back, an NLM lock contended by both, an appender) and a
# load client. Checks: no acknowledged write lost, no ESTALE, no false
# failover, never two lock holders, no reply after a lease ended. The
# 100-fault run is `interop/soak.sh` (interop/README.md).
step "real Linux kernel client (QEMU): 10-fault soak"
bash interop/soak.sh --faults 10 --seed 1

step "all tests passed"
