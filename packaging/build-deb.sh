#!/usr/bin/env bash
# Builds the Debian package asterisk-res-push for the Asterisk whose headers are given.
#
#   ASTERISK_INCLUDE_DIR=... PJPROJECT_INCLUDE_DIR=... ASTERISK_VERSION=... packaging/build-deb.sh [options]
#
# 1. cargo builds res_push.so and res-push-sidecar (release) against those headers and Debian
#    11's glibc, in a bullseye build root (packaging/build-bullseye.sh), so that the package
#    installs on Debian 11 and later (skipped with --prebuilt; --host-glibc builds on this
#    machine instead);
# 2. they are staged with push.conf, the operator guide and the crates' licenses;
# 3. dpkg-buildpackage -b runs in a throwaway overlay of a Debian build root (the sid chroot of
#    asterisk-headers/prepare.sh; the root itself is never written), with the headers the module
#    was built against mounted on /usr/include/asterisk, so that dh_asterisk derives the
#    asterisk-abi-<AST_BUILDOPT_SUM> dependency from them;
# 4. optionally lintian runs there on the result.
#
# Options:
#   --out DIR          where the .deb, .changes and .buildinfo go (default: target/debian)
#   --moddir DIR       Asterisk's module directory on the target system
#                      (default: Debian's, /usr/lib/<multiarch>/asterisk/modules)
#   --version VERSION  package version; adds a changelog entry (default: debian/changelog's)
#   --prebuilt DIR     take libres_push.so and res-push-sidecar from DIR instead of building;
#                      they must have been built against ASTERISK_INCLUDE_DIR (checked)
#   --lintian          run lintian on the package; fails on any error
#   --host-glibc       build with this machine's cargo and glibc instead of Debian 11's: the
#                      package then needs this machine's glibc version or later
#   --asterisk-depends DEP
#                      depend on DEP (a Debian relation, e.g. 'asterisk (= 8:18.0.24-1)')
#                      instead of asterisk-abi-<AST_BUILDOPT_SUM>, for an Asterisk package that
#                      provides no asterisk-abi-* (see the operator guide for the risk)
# Environment:
#   ASTERISK_INCLUDE_DIR   folder holding asterisk.h and asterisk/ (required)
#   PJPROJECT_INCLUDE_DIR  configured pjproject headers of that Asterisk (required to build)
#   ASTERISK_VERSION       that Asterisk's version, when its headers lack ASTERISK_VERSION_NUM
#                          (required to build from Debian's headers; see build.rs)
#   RES_PUSH_CHROOT        Debian build root with debhelper and asterisk-dev (for dh_asterisk)
#                          (default: /var/lib/res-push/sid-chroot)
#   CARGO_TARGET_DIR       as for cargo (default: target)
# Prints the path of the built .deb on stdout's last line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
log() { printf '[build-deb] %s\n' "$*" >&2; }
die() { printf '[build-deb] error: %s\n' "$*" >&2; exit 1; }

out=$top/target/debian
moddir=
version=
prebuilt=
lintian=false
host_glibc=false
asterisk_depends=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --moddir) moddir=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --prebuilt) prebuilt=$2; shift 2 ;;
        --lintian) lintian=true; shift ;;
        --host-glibc) host_glibc=true; shift ;;
        --asterisk-depends)
            asterisk_depends=$2; shift 2
            [ -n "$asterisk_depends" ] || die "--asterisk-depends needs a dependency (e.g. 'asterisk (= VERSION)')"
            case "$asterisk_depends" in *,* | *'|'*) die "--asterisk-depends takes one relation, no ',' or '|'" ;; esac
            ;;
        -h|--help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "must run as root (it mounts an overlay of the build root)"
root=${RES_PUSH_CHROOT:-/var/lib/res-push/sid-chroot}
[ -x "$root/usr/bin/dpkg-buildpackage" ] && [ -x "$root/usr/bin/dh_asterisk" ] ||
    die "$root has no dpkg-buildpackage or dh_asterisk (run asterisk-headers/prepare.sh)"
[ -n "${ASTERISK_INCLUDE_DIR:-}" ] || die "set ASTERISK_INCLUDE_DIR to the folder holding asterisk.h and asterisk/"
headers=$(cd "$ASTERISK_INCLUDE_DIR" && pwd)
buildopts=$headers/asterisk/buildopts.h
[ -f "$buildopts" ] || die "$buildopts not found"
abi=$(sed -n 's/^#define[[:space:]]*AST_BUILDOPT_SUM[[:space:]]*"\([0-9a-f]*\)".*/\1/p' "$buildopts")
[ -n "$abi" ] || die "no AST_BUILDOPT_SUM in $buildopts"
mkdir -p "$out"
out=$(cd "$out" && pwd)

cd "$top"
target_dir=${CARGO_TARGET_DIR:-$top/target}
if [ -z "$prebuilt" ]; then
    [ -n "${PJPROJECT_INCLUDE_DIR:-}" ] || die "set PJPROJECT_INCLUDE_DIR to the pjproject headers of that Asterisk"
    if [ "$host_glibc" = true ]; then
        log "building res_push.so and res-push-sidecar (release) against $headers, with this machine's glibc"
        cargo build --locked --release -p res_push -p res-push-sidecar >&2
        prebuilt=$target_dir/release
    else
        log "building res_push.so and res-push-sidecar (release) against $headers and Debian 11's glibc"
        prebuilt=$("$here/build-bullseye.sh" | tail -n 1)
    fi
fi
for f in libres_push.so res-push-sidecar; do
    [ -f "$prebuilt/$f" ] || die "$prebuilt/$f not found"
done
# AST_MODULE_INFO puts the sum into the module: a module built against other headers would
# get a dependency on the wrong Asterisk. (debian/rules checks again, against dh_asterisk.)
grep -qF "$abi" "$prebuilt/libres_push.so" ||
    die "$prebuilt/libres_push.so was not built against $headers (its AST_BUILDOPT_SUM $abi is not in it)"

work=$(mktemp -d /var/tmp/res-push-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/build/asterisk-res-push
mkdir -p "$src/stage" "$work/upper" "$work/wd" "$work/root"
cp -a "$here/debian" "$src/debian"
cp "$prebuilt/libres_push.so" "$src/stage/res_push.so"
cp "$prebuilt/res-push-sidecar" "$src/stage/res-push-sidecar"
cp "$top/conf/push.conf" "$src/stage/push.conf"
cp "$top/conf/push_bindings.sql" "$src/stage/push_bindings.sql"
cp "$top/docs/operator-guide.md" "$src/stage/operator-guide.md"
cp "$buildopts" "$src/stage/buildopts.h"
# Built in the Debian 11 root: its dpkg-shlibdeps result, if it is about these very binaries.
if [ -f "$prebuilt/res-push.shlibs" ]; then
    sed -n 's/^# //p' "$prebuilt/res-push.shlibs" | (cd "$prebuilt" && sha256sum --check --quiet --status) ||
        die "$prebuilt/res-push.shlibs does not describe the binaries next to it (rebuild with packaging/build-bullseye.sh)"
    grep '^shlibs:Depends=' "$prebuilt/res-push.shlibs" >"$src/stage/shlibs.substvars"
    log "shared-library dependencies from the Debian 11 root: $(sed 's/^shlibs:Depends=//' "$src/stage/shlibs.substvars")"
fi

# Licenses of the crates statically linked into the two binaries (the copyright file points
# here): name, version and license expression from cargo, then each crate's license files.
{
    echo "Rust crates linked into res_push.so and res-push-sidecar, with their licenses."
    echo
    cargo tree --locked --offline -e normal,no-proc-macro -p res_push -p res-push-sidecar \
        --target x86_64-unknown-linux-gnu --prefix none --format '{p}|{l}' |
        sed 's/ (\*)$//' | grep -v ' (/' | sort -u >"$work/crates"
    cat "$work/crates"
    while IFS='|' read -r crate _; do
        name=${crate% v*}
        ver=${crate##* v}
        dir=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -mindepth 2 -maxdepth 2 -type d \
            -name "$name-$ver" -print -quit 2>/dev/null)
        [ -n "$dir" ] || continue
        for lic in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
            [ -f "$lic" ] || continue
            printf '\n==== %s %s: %s ====\n\n' "$name" "$ver" "${lic##*/}"
            cat "$lic"
        done
    done <"$work/crates"
} >"$src/stage/third-party-licenses.txt"

# The package version follows Cargo's: debian/changelog's upstream part must match it.
cargo_version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
changelog_version=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' "$src/debian/changelog")
if [ -n "$version" ]; then
    {
        printf 'asterisk-res-push (%s) unstable; urgency=medium\n\n' "$version"
        printf '  * Built from res_push %s for Asterisk ABI %s.\n\n' "$cargo_version" "$abi"
        printf ' -- %s  %s\n\n' "$(sed -n 's/^Maintainer: //p' "$src/debian/control")" "$(date -R)"
        cat "$src/debian/changelog"
    } >"$work/changelog"
    mv "$work/changelog" "$src/debian/changelog"
else
    version=$changelog_version
fi
upstream=${version#*:}
upstream=${upstream%-*}
[ "$upstream" = "$cargo_version" ] ||
    die "package version $version does not match Cargo's $cargo_version: add a debian/changelog entry or pass --version"

if [ -n "$asterisk_depends" ]; then
    log "WARNING: depending on '$asterisk_depends' instead of asterisk-abi-$abi: apt will not check the Asterisk ABI; only Asterisk's load-time checks (build options, res_push's version identity) will"
fi
log "dpkg-buildpackage -b for asterisk-res-push $version (${asterisk_depends:-ABI asterisk-abi-$abi}${moddir:+, modules in $moddir}) in an overlay of $root"
# Everything below runs in a private mount namespace: the overlay and bind mounts vanish with it.
unshare --mount --propagation private -- bash -euo pipefail -s -- \
    "$root" "$work" "$headers" "$moddir" "$lintian" "$asterisk_depends" <<'NS' >&2
root=$1 work=$2 headers=$3 moddir=$4 lintian=$5 asterisk_depends=$6
r=$work/root
mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/wd" "$r"
mkdir -p "$r/build"
mount --bind "$work/build" "$r/build"
# dh_asterisk reads /usr/include/asterisk/buildopts.h: make it the one the module was built with.
mkdir -p "$r/usr/include/asterisk"
mount --bind "$headers/asterisk" "$r/usr/include/asterisk"
mount -o remount,bind,ro "$r/usr/include/asterisk"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
in_root() {
    chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        ${moddir:+ASTERISK_MODDIR=$moddir} ${asterisk_depends:+"ASTERISK_DEPENDS=$asterisk_depends"} "$@"
}
# Nothing is compiled here, so build-essential (implied by dpkg-checkbuilddeps) is not needed:
# check the declared Build-Depends alone, then build without the implicit check.
in_root sh -c 'cd /build/asterisk-res-push &&
    dpkg-checkbuilddeps -d "$(sed -n "s/^Build-Depends: //p" debian/control)" /dev/null &&
    dpkg-buildpackage -b --no-sign --no-check-builddeps'
if [ "$lintian" = true ]; then
    echo "== lintian"
    # As nobody: lintian warns against running as root.
    chroot --userspec=nobody:nogroup "$r" env -i PATH=/usr/bin:/bin HOME=/tmp LC_ALL=C.UTF-8 \
        sh -c 'lintian --info --display-info --show-overrides --fail-on error /build/*.changes' ||
        { echo "lintian reports errors" >&2; exit 1; }
    echo "== lintian: no errors"
fi
NS

cp "$work"/build/*.deb "$work"/build/*.changes "$work"/build/*.buildinfo "$out/"
deb=$(ls "$work"/build/asterisk-res-push_*.deb)
log "built $out/${deb##*/}"
echo "$out/${deb##*/}"
