#!/usr/bin/env bash
# Runs every test on a fresh Debian 12 machine: installs host packages, builds the Debian sid
# chroot with Asterisk 22 and SIPp, prepares headers, builds, then runs the unit tests and the
# integration tests against the real Asterisk.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

echo "== build" >&2
cargo build --locked --workspace --bins --lib

echo "== unit tests (no Asterisk)" >&2
cargo test --locked -p res-push-core -p res-push-proto -p res-push-sidecar -p res-push-mocks

echo "== integration tests (real Asterisk 22 in $RES_PUSH_CHROOT)" >&2
# Two at a time: each test runs its own Asterisk, and CI machines have two cores.
cargo test --locked -p res-push-itests -- --test-threads=2

echo "== demo: the README's first command, non-interactive; it checks its own timeline" >&2
tests/demo.sh

echo "== benchmarks (figures only, no assertions on time)" >&2
cargo bench --locked -p res-push-core --bench register
cargo build --locked --release -p res_push
cargo build --locked -p res-push-itests --bins
# The release module: the figure is about the product, not about debug assertions.
RES_PUSH_MODULE="$RES_PUSH_ROOT/target/release/libres_push.so" target/debug/res-push-bench-register
# Sidecar throughput against the mocks, beside a bare HTTP/2 client (short run; --full for more).
cargo build --locked --release -p res-push-sidecar -p res-push-itests --bin res-push-sidecar --bin res-push-bench-sidecar
RES_PUSH_SIDECAR_BIN="$RES_PUSH_ROOT/target/release/res-push-sidecar" target/release/res-push-bench-sidecar
# Wake-up latency against the polling baselines, release module and sidecar (short; --full: 200 calls).
RES_PUSH_MODULE="$RES_PUSH_ROOT/target/release/libres_push.so" \
    RES_PUSH_SIDECAR_BIN="$RES_PUSH_ROOT/target/release/res-push-sidecar" target/debug/res-push-bench-wake

echo "== Debian package: release build, .deb + lintian, apt install/upgrade/remove/purge in a copy of the chroot" >&2
tests/package-test.sh
