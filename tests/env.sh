# Sourced by run-tests.sh and demo.sh: installs what is missing, prepares the chroot and headers,
# and exports what the build and the harness read.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "This needs root (it builds a chroot and runs Asterisk in it): re-run with sudo." >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install the Rust toolchain (rustup) first; see README.md." >&2
    exit 1
fi

RES_PUSH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$RES_PUSH_ROOT"

# prepare.sh prints VAR=value lines last; everything else it says goes to stderr.
while IFS='=' read -r key value; do
    case "$key" in
        RES_PUSH_CHROOT|RES_PUSH_CLIENT_CHROOT|ASTERISK_INCLUDE_DIR|PJPROJECT_INCLUDE_DIR|ASTERISK_VERSION) export "$key=$value" ;;
    esac
done < <(asterisk-headers/prepare.sh)

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RES_PUSH_MODULE="${CARGO_TARGET_DIR:-$RES_PUSH_ROOT/target}/debug/libres_push.so"
export RES_PUSH_SIDECAR_BIN="${CARGO_TARGET_DIR:-$RES_PUSH_ROOT/target}/debug/res-push-sidecar"
