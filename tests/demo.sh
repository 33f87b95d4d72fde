#!/usr/bin/env bash
# The demo on a fresh Debian 12 machine: a real Asterisk 22 with res_push.so loaded, and
# res-push-sidecar, linked; prints what an operator sees. `tests/demo.sh --keep` leaves them
# running until Ctrl-C.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# The module is a cdylib (a --lib target): --bins alone would never build it.
cargo build --locked -p res_push --lib
cargo build --locked -p res-push-sidecar -p res-push-itests --bins
exec target/debug/res-push-demo "$@"
