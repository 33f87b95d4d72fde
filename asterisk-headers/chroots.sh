# Sourced by prepare.sh and packaging/build-bullseye.sh: the Debian mirror to build from, and
# chroots built once, stamped with their suite and packages, reused afterwards. The sourcing
# script defines log and die.

# The mirror is taken from the host's own apt configuration, so a local mirror or proxy is honoured.
mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    echo "${RES_PUSH_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

# build_chroot DIR SUITE PACKAGES
build_chroot() {
    local dir=$1 suite=$2 packages=$3
    local stamp="$dir/.res-push-stamp" want="suite=$suite packages=$packages"
    # Stamps written before the suite was recorded hold the packages only.
    if [ -f "$stamp" ] && { [ "$(cat "$stamp")" = "$want" ] \
        || [ "$(cat "$stamp")" = "packages=$packages" ]; }; then
        log "reusing chroot $dir"
        return
    fi
    # A package added to the list: install it in place rather than rebuild (tests may be
    # running in the chroot). If that fails, say so: removing a chroot in use breaks them.
    if [ -f "$stamp" ]; then
        log "installing $packages in $dir"
        # No daemon may start inside the chroot (postgresql's postinst would start a server
        # there): tests start their own instances. policy-rc.d says no to every service start,
        # for this install only (one already there is the operator's and stays).
        local policy="$dir/usr/sbin/policy-rc.d" own_policy=""
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
        fi
        local ok=1
        # /proc in a mount namespace of its own (maintainer scripts such as systemd-tmpfiles
        # need it; nothing stays mounted afterwards).
        unshare --mount --propagation private -- sh -c \
            "mount -t proc proc '$dir/proc' && chroot '$dir' sh -c 'apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(echo "$packages" | tr , ' ')'" >&2 \
            || ok=""
        [ -n "$own_policy" ] && rm -f "$policy"
        [ -n "$ok" ] || die "could not add packages to $dir; remove it (rm -rf $dir) to have it rebuilt"
        echo "$want" >"$stamp"
        log "chroot $dir updated in place"
        return
    fi
    local m; m=$(mirror)
    log "building $suite chroot in $dir from $m (about a minute)"
    rm -rf "$dir.tmp"
    mkdir -p "$(dirname "$dir")"
    # Check-Valid-Until: the mirror's sid Release file is sometimes seen as expired.
    mmdebstrap --quiet --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
        --include="$packages" "$suite" "$dir.tmp" \
        "deb $m $suite main" "deb-src $m $suite main" >&2
    echo "$want" >"$dir.tmp/.res-push-stamp"
    # Only reached without a stamp: whatever is there is no finished chroot of ours.
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
}

