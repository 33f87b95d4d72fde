#!/usr/bin/env bash
# Builds res_push.so and res-push-sidecar (release) against Debian 11's glibc (2.31), so that
# the package installs on Debian 11 (XiVO's base) and every later Debian:
#
#   ASTERISK_INCLUDE_DIR=... PJPROJECT_INCLUDE_DIR=... ASTERISK_VERSION=... packaging/build-bullseye.sh
#
# cargo runs inside a Debian 11 (bullseye) build root (gcc 10, glibc 2.31, libclang 11 for
# bindgen), with this machine's Rust toolchain, cargo home, workspace, target directory and
# headers bind-mounted at their own paths in a private mount namespace. The root is built here
# with mmdebstrap the first time (about a minute; reused while its package list is unchanged)
# and never written by the build itself. Why this and not cargo-zigbuild: see packaging/README.md.
#
# Environment:
#   ASTERISK_INCLUDE_DIR, PJPROJECT_INCLUDE_DIR, ASTERISK_VERSION   as for cargo build (build.rs)
#   RES_PUSH_BULLSEYE_ROOT   the build root (default: /var/lib/res-push/bullseye-build)
#   CARGO_TARGET_DIR         as for cargo (default: target); this build goes to its bullseye/
#                            subfolder, so it never mixes with host-built artifacts
#   RES_PUSH_MIRROR          Debian mirror (default: the host's, as asterisk-headers/prepare.sh)
# Prints the directory holding libres_push.so and res-push-sidecar on stdout's last line. Next
# to them, res-push.shlibs: the shlibs:Depends that Debian 11's dpkg-shlibdeps derives from
# them, with their checksums (build-deb.sh packages it; see below why not sid's).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
log() { printf '[build-bullseye] %s\n' "$*" >&2; }
die() { printf '[build-bullseye] error: %s\n' "$*" >&2; exit 1; }
source "$top/asterisk-headers/chroots.sh"

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap, chroot and bind mounts need it)"
root=${RES_PUSH_BULLSEYE_ROOT:-/var/lib/res-push/bullseye-build}
# Changing this list rebuilds the root. libclang-dev: bindgen; gcc/libc6-dev: the C shim, ring
# and the link; dpkg-dev: dpkg-shlibdeps (below).
PACKAGES="gcc,libc6-dev,libclang-dev,dpkg-dev"

for v in ASTERISK_INCLUDE_DIR PJPROJECT_INCLUDE_DIR ASTERISK_VERSION; do
    [ -n "${!v:-}" ] || die "set $v (asterisk-headers/prepare.sh prints it for Debian's Asterisk)"
done
sysroot=$(rustc --print sysroot)
case "$sysroot" in
    /usr | /usr/local) die "the Rust toolchain in $sysroot cannot be mounted into the build root: use a rustup toolchain" ;;
esac
[ -x "$sysroot/bin/cargo" ] || die "no cargo in $sysroot/bin"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
target_dir=${CARGO_TARGET_DIR:-$top/target}
mkdir -p "$target_dir/bullseye"
target_dir=$(cd "$target_dir" && pwd)
asterisk=$(cd "$ASTERISK_INCLUDE_DIR" && pwd)
pjproject=$(cd "$PJPROJECT_INCLUDE_DIR" && pwd)


command -v mmdebstrap >/dev/null || {
    log "installing mmdebstrap"
    apt-get update -qq >&2 && apt-get install -y -qq mmdebstrap >&2
}
build_chroot "$root" bullseye "$PACKAGES"
glibc=$(chroot "$root" dpkg-query -W -f '${Version}' libc6)
log "glibc of the build root: $glibc"

# Crates are fetched on the host (the root needs no network); the build itself is offline.
(cd "$top" && cargo fetch --locked >&2)

log "cargo build --release (res_push, res-push-sidecar) in an overlay of $root"
work=$(mktemp -d /var/tmp/res-push-bullseye.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/upper" "$work/wd" "$work/root"
# Everything below runs in a private mount namespace: the overlay (the root itself is never
# written) and the bind mounts vanish with it.
unshare --mount --propagation private -- bash -euo pipefail -s -- "$root" "$work" "$top" \
    "$target_dir" "$sysroot" "$cargo_home" "$asterisk" "$pjproject" "$ASTERISK_VERSION" <<'NS' >&2
root=$1 work=$2 top=$3 target_dir=$4 sysroot=$5 cargo_home=$6 asterisk=$7 pjproject=$8 version=$9
r=$work/root
mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/wd" "$r"
bind() { # path, ro|rw: mounted at the same path inside
    mkdir -p "$r$1"
    mount --bind "$1" "$r$1"
    [ "$2" = rw ] || mount -o remount,bind,ro "$r$1"
}
for d in "$top" "$sysroot" "$asterisk" "$pjproject"; do bind "$d" ro; done
bind "$cargo_home" rw
bind "$target_dir" rw
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
chroot "$r" env -i PATH="$sysroot/bin:/usr/bin:/bin" HOME=/tmp LC_ALL=C.UTF-8 \
    CARGO_HOME="$cargo_home" CARGO_TARGET_DIR="$target_dir/bullseye" CARGO_TERM_COLOR=never \
    ASTERISK_INCLUDE_DIR="$asterisk" PJPROJECT_INCLUDE_DIR="$pjproject" ASTERISK_VERSION="$version" \
    sh -c "cd '$top' && cargo build --locked --offline --release -p res_push -p res-push-sidecar"
# The shared-library dependencies, computed here against Debian 11's libc6 symbols: sid's
# dpkg-shlibdeps would attribute pthread_* and dl* (libpthread.so.0 and libdl.so.2 in 2.31,
# merged into libc.so.6 in 2.34) to libc.so.6 and ask for libc6 (>= 2.34).
out=$target_dir/bullseye/release
chroot "$r" env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 sh -euc "
    mkdir -p /tmp/shlibs/debian && cp '$top/packaging/debian/control' /tmp/shlibs/debian/
    cd /tmp/shlibs
    dpkg-shlibdeps -O -e'$out/libres_push.so' -e'$out/res-push-sidecar' >shlibs
    grep -q '^shlibs:Depends=' shlibs
    cd '$out' && sha256sum libres_push.so res-push-sidecar | sed 's/^/# /' >/tmp/shlibs/sums
    cat /tmp/shlibs/sums /tmp/shlibs/shlibs >'$out/res-push.shlibs'"
NS
out=$target_dir/bullseye/release
for f in libres_push.so res-push-sidecar; do
    [ -f "$out/$f" ] || die "$out/$f not built"
done
log "built against glibc $glibc: $out ($(sed -n 's/^shlibs:Depends=//p' "$out/res-push.shlibs"))"
echo "$out"
