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

echo "== Debian package: release build, .deb + lintian, apt install/upgrade/remove/purge in a copy of the chroot" >&2
tests/package-test.sh
