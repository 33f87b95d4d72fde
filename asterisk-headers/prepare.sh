#!/usr/bin/env bash
# Prepares everything that comes from Debian's Asterisk 22 and is never committed:
#   1. a Debian sid chroot with asterisk, asterisk-dev, sip-tester and postgresql (tests and demo run Asterisk there:
#      installing sid's Asterisk on the bookworm host would upgrade libc and ~200 other packages);
#   2. the Asterisk headers staged in a folder of their own (passing the chroot's /usr/include would
#      mix sid's libc headers into the host build);
#   3. the headers of the pjproject that Debian's Asterisk bundles (asterisk-dev lacks them, but
#      res_pjsip.h needs them), configured the way Asterisk configures them.
# Idempotent: each step is skipped when its stamp matches. Prints the env to build with on stdout's last lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHROOT=${RES_PUSH_CHROOT:-/var/lib/res-push/sid-chroot}
OUT=${RES_PUSH_HEADERS_OUT:-$here/build}
# Packages the chroot needs; changing this list rebuilds the chroot.
# postgresql: the shared-bindings tests run a server of their own (initdb, unprivileged);
# odbc-postgresql: the same tests reach it through res_odbc too.
PACKAGES="asterisk,asterisk-dev,sip-tester,procps,lintian,systemd,postgresql,odbc-postgresql"
# The real softphone of the client tests (linphonec) runs in a bookworm chroot of its own:
# sid's linphone-cli is not installable (its libsoci dependencies conflict).
CLIENT_CHROOT=${RES_PUSH_CLIENT_CHROOT:-/var/lib/res-push/client-chroot}
CLIENT_PACKAGES="linphone-cli,procps"

log() { printf '[prepare] %s\n' "$*" >&2; }
die() { printf '[prepare] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap and chroot need it)"
# mirror, build_chroot: shared with packaging/build-bullseye.sh.
source "$here/chroots.sh"

# The library bindgen (clang-sys) loads: libclang.so, libclang-<ver>.so*, libclang.so.<ver>.
# Never libclang-cpp*: Debian 12 images carry libclang-cpp14 through llvm-14-dev, and clang-sys
# cannot use it, so counting it would skip the libclang-dev install and fail later in bindgen.
have_libclang() {
    local dirs=() d f
    [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
    dirs+=(/usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/lib)
    for d in "${dirs[@]}"; do
        for f in "$d"/libclang.so "$d"/libclang.so.* "$d"/libclang-*.so*; do
            [ -e "$f" ] || continue
            case "${f##*/}" in libclang-cpp*) continue ;; esac
            return 0
        done
    done
    return 1
}

host_deps() {
    local missing=()
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    have_libclang || missing+=(libclang-dev)
    command -v xz >/dev/null || missing+=(xz-utils)
    command -v unshare >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing host packages: ${missing[*]}"
        apt-get update -qq >&2
        apt-get install -y -qq "${missing[@]}" >&2
    fi
}

stage_headers() {
    local ver stamp="$OUT/.stamp"
    ver=$(chroot "$CHROOT" dpkg-query -W -f='${Version}' asterisk-dev)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$ver" ]; then
        log "reusing staged headers for asterisk $ver"
        return
    fi
    log "staging headers of asterisk $ver"
    rm -rf "$OUT"
    mkdir -p "$OUT/asterisk" "$OUT/pjproject" "$OUT/src"
    cp -a "$CHROOT/usr/include/asterisk.h" "$CHROOT/usr/include/asterisk" "$OUT/asterisk/"

    # pjproject comes from the orig-Xpjproject component of Debian's asterisk source package.
    local src=/root/res-push-src
    chroot "$CHROOT" sh -c "rm -rf $src && mkdir -p $src && cd $src && apt-get -qq update && apt-get -qq source --download-only asterisk" >&2
    local pj main
    pj=$(ls "$CHROOT$src"/asterisk_*.orig-Xpjproject.tar.* | head -1)
    main=$(ls "$CHROOT$src"/asterisk_*.orig.tar.* | head -1)
    [ -f "$pj" ] || die "no pjproject component in Debian's asterisk source package"
    [ -f "$main" ] || die "no main orig tarball in Debian's asterisk source package"
    tar -C "$OUT/src" -xf "$pj"
    local pjdir; pjdir=$(find "$OUT/src" -maxdepth 2 -name aconfigure -printf '%h\n' | head -1)
    [ -n "$pjdir" ] || die "pjproject sources have no aconfigure"
    # Asterisk builds pjproject with its own config_site.h; the same file makes the struct layouts match.
    mkdir -p "$OUT/src/ast"
    tar -C "$OUT/src/ast" -xf "$main" --wildcards '*/third-party/pjproject/patches/*.h'
    cp "$OUT"/src/ast/*/third-party/pjproject/patches/*.h "$pjdir/pjlib/include/pj/"
    (cd "$pjdir" && ./aconfigure --disable-sound --disable-video --disable-speex-codec \
        --disable-speex-aec --disable-gsm-codec --disable-ilbc-codec --disable-l16-codec \
        --disable-g722-codec --disable-g7221-codec --disable-opencore-amr --disable-silk \
        --disable-opus --disable-libsrtp --disable-libyuv --disable-libwebrtc \
        --without-external-pa --disable-resample --disable-ssl >/dev/null) >&2
    # One merged include folder: the five libraries' header trees do not overlap.
    local lib
    for lib in pjlib pjlib-util pjnath pjmedia pjsip; do
        cp -a "$pjdir/$lib/include/." "$OUT/pjproject/"
    done
    rm -rf "$OUT/src"
    chroot "$CHROOT" rm -rf "$src"
    echo "$ver" >"$stamp"
}

host_deps
build_chroot "$CHROOT" sid "$PACKAGES"
build_chroot "$CLIENT_CHROOT" bookworm "$CLIENT_PACKAGES"
stage_headers
echo "RES_PUSH_CHROOT=$CHROOT"
echo "RES_PUSH_CLIENT_CHROOT=$CLIENT_CHROOT"
echo "ASTERISK_INCLUDE_DIR=$OUT/asterisk"
echo "PJPROJECT_INCLUDE_DIR=$OUT/pjproject"
# The headers carry no ASTERISK_VERSION_NUM: build.rs records this version (epoch dropped) in the
# module, which compares it with the running Asterisk's at load.
ver=$(chroot "$CHROOT" dpkg-query -W -f='${Version}' asterisk-dev)
echo "ASTERISK_VERSION=${ver#*:}"
