#!/usr/bin/env bash
# Package test: builds the Debian package asterisk-res-push (release binaries built against
# Debian 11's glibc, checked with objdump -T; lintian), then
# installs, upgrades, removes and purges it with apt in a throwaway copy of the sid chroot while
# Debian's own Asterisk runs there from its stock /etc/asterisk, as on a media server:
#   - install: the asterisk-abi-<sum> dependency resolves against Debian's asterisk (and a
#     package with another sum is refused); the postinst loads res_push into the running
#     Asterisk; files, owners and modes; the unit passes systemd-analyze verify;
#   - the sidecar started as its unit starts it (user, group, environment, runtime directory)
#     serves Asterisk: `push show status` says connected, `push ping` answers;
#   - Debian 11 and later: Depends says libc6 (>= 2.31) or lower and neither binary uses a
#     GLIBC_2.32+ symbol version;
#   - --asterisk-depends (an Asterisk without asterisk-abi-*): that relation replaces the ABI one;
#   - upgrade to a rebuilt package keeps an edited push.conf and reloads the module;
#   - remove unloads the module first; purge leaves no file, account or state of ours.
#
# The copy is an overlay mounted in a private mount, network and PID namespace: the shared
# chroot is never written, the stock Asterisk's ports cannot clash with anything, and every
# mount and process is gone when the namespace ends.
#
# Run by tests/run-tests.sh (or alone, as root). RES_PUSH_PKG_PREBUILT=<dir> packages the
# libres_push.so and res-push-sidecar found there instead of building them (in the Debian 11
# build root, packaging/build-bullseye.sh).
set -euo pipefail

say() { printf '[package-test] %s\n' "$*" >&2; }
fail() { printf '[package-test] FAIL: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" != --in-namespace ]; then
    source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
    started=$SECONDS
    if [ -n "${RES_PUSH_PKG_PREBUILT:-}" ]; then
        bin=$RES_PUSH_PKG_PREBUILT
    else
        say "cargo build --release against Debian 11's glibc (packaging/build-bullseye.sh)"
        bin=$(packaging/build-bullseye.sh | tail -n 1)
    fi
    work=$(mktemp -d /var/tmp/res-push-pkgtest.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    say "building the package (with lintian), then a rebuild with a higher version"
    deb1=$(packaging/build-deb.sh --prebuilt "$bin" --out "$work/v1" --lintian | tail -n 1)
    v1=$(dpkg-deb -f "$deb1" Version)
    deb2=$(packaging/build-deb.sh --prebuilt "$bin" --out "$work/v2" --version "$v1+rebuild1" | tail -n 1)

    say "Debian 11 and later: the glibc the binaries need"
    # dpkg-shlibdeps's libc6 version comes from the symbols actually used.
    libc=$(dpkg-deb -f "$deb1" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
    [ -n "$libc" ] || fail "no versioned libc6 dependency: $(dpkg-deb -f "$deb1" Depends)"
    dpkg --compare-versions "$libc" le 2.31 ||
        fail "Depends: libc6 (>= $libc): the package would not install on Debian 11 (glibc 2.31)"
    dpkg-deb -x "$deb1" "$work/x"
    for f in "$work"/x/usr/lib/*/asterisk/modules/res_push.so "$work"/x/usr/sbin/res-push-sidecar; do
        [ -f "$f" ] || fail "$f not in the package"
        newest=$(objdump -T "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
        newer=$(objdump -T "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV |
            while read -r v; do if dpkg --compare-versions "$v" gt 2.31; then echo "GLIBC_$v"; fi; done | tr '\n' ' ')
        [ -z "$newer" ] || fail "${f##*/} uses glibc symbol versions newer than Debian 11's 2.31: $newer"
        say "  ${f##*/}: newest glibc symbol version GLIBC_$newest"
    done
    say "  Depends: libc6 (>= $libc)"

    say "--asterisk-depends: for an Asterisk package without asterisk-abi-*"
    astver=$(chroot "$RES_PUSH_CHROOT" dpkg-query -W -f '${Version}' asterisk)
    deb3=$(packaging/build-deb.sh --prebuilt "$bin" --out "$work/v3" --asterisk-depends "asterisk (= $astver)" | tail -n 1)
    deps3=$(dpkg-deb -f "$deb3" Depends)
    case "$deps3" in *"asterisk (= $astver)"*) ;; *) fail "--asterisk-depends not in Depends: $deps3" ;; esac
    case "$deps3" in *asterisk-abi-*) fail "--asterisk-depends left the ABI dependency: $deps3" ;; esac
    say "  Depends: $deps3"
    mkdir "$work/upper" "$work/wd" "$work/root"
    unshare --mount --net --pid --fork --mount-proc --propagation private -- \
        "$0" --in-namespace "$work" "$deb1" "$deb2" "$ASTERISK_INCLUDE_DIR/asterisk/buildopts.h" "$deb3"
    say "passed ($((SECONDS - started)) s)"
    exit 0
fi

# ---- inside the namespace ------------------------------------------------------------------
work=$2 deb1=$3 deb2=$4 buildopts=$5 deb3=$6
r=$work/root
mount -t overlay overlay -o "lowerdir=$RES_PUSH_CHROOT,upperdir=$work/upper,workdir=$work/wd" "$r"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
ip link set lo up 2>/dev/null || true

in_root() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"; }
cli() { in_root timeout 20 asterisk -rx "$1" 2>/dev/null | grep -v '^No ethernet interface found' || true; }
status_field() { cli "push show status" | sed -n "s/^ *$1 *: *//p" | head -n 1; }
# The status column reads "Running" or "Not Running".
module_running() { cli "module show like res_push" | grep '^res_push\.so ' | grep -v 'Not Running' | grep -q ' Running '; }
link_connected() { [ "$(status_field 'Sidecar link')" = connected ]; }
booted() { cli "core waitfullybooted" | grep -q 'fully booted'; }
wait_until() { # seconds, command...: polls every 200 ms
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}
apt_install() { # log file, .deb or package names...
    local logf=$1; shift
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
        >"$logf" 2>&1 || { cat "$logf" >&2; return 1; }
}
stat_of() { in_root stat -c '%U:%G %a' "$1"; }
expect_eq() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; }

asterisk_pid= sidecar_pid=
cleanup() {
    if [ -n "$asterisk_pid" ] && kill -0 "$asterisk_pid" 2>/dev/null; then
        if [ "${ok:-}" != 1 ]; then
            echo "===== Asterisk console =====" >&2
            tail -n 40 "$work/asterisk.log" >&2 || true
        fi
        cli "core stop now" >/dev/null
    fi
    if [ "${ok:-}" != 1 ] && [ -f "$work/sidecar.log" ]; then
        echo "===== sidecar log =====" >&2
        tail -n 20 "$work/sidecar.log" >&2
    fi
}
trap cleanup EXIT

# Everything outside these (apt and dpkg bookkeeping, logs, caches, Asterisk's own state, /run:
# a tmpfs, where adduser leaves its lock file) must look the same after the purge as before the
# install.
snapshot() {
    (cd "$r" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./var/tmp \
        -o -path ./var/log -o -path ./var/cache -o -path ./var/lib/apt -o -path ./var/lib/dpkg \
        -o -path ./var/lib/asterisk -o -path ./var/spool/asterisk -o -path ./run \) \
        -prune -o -print | sort)
}
# And nothing named after us anywhere (dpkg's database and logs included).
ours() {
    (cd "$r" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp \) -prune -o \
        \( -iname '*res-push*' -o -iname '*res_push*' -o -name 'push.conf*' \) -print | sort)
}
snapshot >"$work/before.txt"
ours >"$work/ours.before"
for f in passwd group shadow gshadow; do cp "$r/etc/$f" "$work/$f.before"; done

say "starting Debian's Asterisk from its stock /etc/asterisk, as its unit does (-U asterisk -G asterisk)"
chroot "$r" /usr/sbin/asterisk -f -n -U asterisk -G asterisk >"$work/asterisk.log" 2>&1 &
asterisk_pid=$!
wait_until 60 booted ||
    fail "Asterisk did not boot"
module_running && fail "res_push loaded before the package is installed"

pkgdir=/var/tmp/res-push-pkgtest
mkdir -p "$r$pkgdir"
mkdir -p "$r$pkgdir/v3"
cp "$deb1" "$deb2" "$r$pkgdir/"
cp "$deb3" "$r$pkgdir/v3/"
deb1=$pkgdir/${deb1##*/} deb2=$pkgdir/${deb2##*/} deb3=$pkgdir/v3/${deb3##*/}

say "ABI dependency"
sum=$(sed -n 's/^#define[[:space:]]*AST_BUILDOPT_SUM[[:space:]]*"\([0-9a-f]*\)".*/\1/p' "$buildopts")
in_root dpkg-deb -f "$deb1" Depends | grep -qw "asterisk-abi-$sum" ||
    fail "Depends lacks asterisk-abi-$sum: $(in_root dpkg-deb -f "$deb1" Depends)"
in_root dpkg-query -W -f '${Provides}' asterisk | grep -qw "asterisk-abi-$sum" ||
    fail "Debian's asterisk does not provide asterisk-abi-$sum"
# The same package for another Asterisk build must be refused.
in_root dpkg-deb -R "$deb1" /var/tmp/mismatch
sed -i "s/asterisk-abi-$sum/asterisk-abi-00000000000000000000000000000000/" "$r/var/tmp/mismatch/DEBIAN/control"
in_root dpkg-deb -b /var/tmp/mismatch /var/tmp/mismatch.deb >/dev/null
if in_root apt-get install -s /var/tmp/mismatch.deb >"$work/mismatch.log" 2>&1; then
    fail "a package for another Asterisk ABI would install: $(cat "$work/mismatch.log")"
fi
grep -q 'asterisk-abi-00000000000000000000000000000000 but it is not installable' "$work/mismatch.log" ||
    fail "unexpected refusal: $(cat "$work/mismatch.log")"
rm -rf "$r/var/tmp/mismatch" "$r/var/tmp/mismatch.deb"
say "  Depends: $(in_root dpkg-deb -f "$deb1" Depends); a package for ABI 0000… is refused by apt"
in_root apt-get install -s "$deb3" >"$work/depends3.log" 2>&1 ||
    fail "the --asterisk-depends package would not install next to Debian's asterisk: $(cat "$work/depends3.log")"
say "  the --asterisk-depends package installs (apt-get install -s) next to Debian's asterisk"

say "install $(basename "$deb1") with apt while Asterisk runs"
apt_install "$work/install.log" "$deb1"
grep -q 'res_push.so loaded into the running Asterisk' "$work/install.log" ||
    fail "postinst did not load the module: $(cat "$work/install.log")"
module_running || fail "res_push not Running after install: $(cli 'module show like res_push')"
say "  $(grep '^asterisk-res-push:' "$work/install.log" | tr '\n' ' ')"
say "  $(cli 'module show like res_push' | grep '^res_push' | tr -s ' ')"
in_root dpkg-query -W -f '${Conffiles}' asterisk-res-push | grep -q '/etc/asterisk/push.conf' ||
    fail "push.conf is not a conffile"
# The module's state: push bindings in Asterisk's database, family res_push. A stand-in entry
# (no SIP client here) that the purge must delete.
cli "database put res_push package-test probe" >/dev/null
cli "database show res_push" | grep -q 'package-test' || fail "cannot write to astdb"

say "files, account, permissions"
moddir=/usr/lib/x86_64-linux-gnu/asterisk/modules
for f in "$moddir/res_push.so" /usr/sbin/res-push-sidecar /etc/asterisk/push.conf \
    /etc/default/res-push-sidecar /usr/lib/systemd/system/res-push-sidecar.service \
    /usr/share/res-push/push_bindings.sql; do
    [ -f "$r$f" ] || fail "$f not installed"
done
expect_eq "sidecar account" "$(in_root id -gn res-push)" asterisk
expect_eq "push.conf" "$(stat_of /etc/asterisk/push.conf)" "root:asterisk 640"
expect_eq "credentials directory" "$(stat_of /etc/res-push/credentials)" "res-push:root 700"
in_root setpriv --reuid=res-push --regid=asterisk --init-groups ls /etc/res-push/credentials >/dev/null ||
    fail "the sidecar's user cannot read its credentials"
if in_root setpriv --reuid=asterisk --regid=asterisk --init-groups ls /etc/res-push/credentials >/dev/null 2>&1; then
    fail "Asterisk's user can read the credentials"
fi
[ -L "$r/etc/systemd/system/multi-user.target.wants/res-push-sidecar.service" ] ||
    fail "the unit was not enabled"
unit=/usr/lib/systemd/system/res-push-sidecar.service
# --man=no: checking Documentation=man:… would run man(1), whose cache would then hold a page of
# ours after the purge; the page itself is checked here instead.
[ -f "$r/usr/share/man/man8/res-push-sidecar.8.gz" ] || fail "no manual page"
in_root systemd-analyze verify --man=no "$unit" >"$work/verify.log" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$work/verify.log")"
in_root systemd-analyze security --offline=true "$unit" 2>/dev/null | grep -i 'overall exposure' >&2 || true

say "start the sidecar as its unit does"
unit_values() { sed -n "s/^$1=//p" "$r$unit"; }
user=$(unit_values User) group=$(unit_values Group) umask=$(unit_values UMask)
runtime=/run/$(unit_values RuntimeDirectory)
exec_start=$(unit_values ExecStart)
env_file=$(unit_values EnvironmentFile)
env_file=${env_file#-}
mapfile -t env < <(unit_values Environment; grep -E '^[A-Z_]+=' "$r$env_file" || true)
# RuntimeDirectory: created owned by User:Group with RuntimeDirectoryMode, removed at stop.
install -d -m "$(unit_values RuntimeDirectoryMode)" "$r$runtime"
chroot "$r" chown "$user:$group" "$runtime"
chroot "$r" setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs -- \
    env -i "${env[@]}" sh -c "umask $umask; exec $exec_start" >"$work/sidecar.log" 2>&1 &
sidecar_pid=$!
socket=$(printf '%s\n' "${env[@]}" | sed -n 's/^RES_PUSH_SIDECAR_SOCKET=//p')
wait_until 20 test -S "$r$socket" || fail "the sidecar did not create $socket"
expect_eq "sidecar process uid" "$(ps -o uid= -p "$sidecar_pid" | tr -d ' ')" "$(in_root id -u "$user")"
expect_eq "socket" "$(stat_of "$socket")" "res-push:asterisk 660"
expect_eq "runtime directory" "$(stat_of "$runtime")" "res-push:asterisk 750"

say "Asterisk connects to it"
wait_until 20 link_connected || fail "push show status never said connected: $(cli 'push show status')"
pong=$(cli "push ping")
case "$pong" in Pong*) ;; *) fail "push ping: $pong" ;; esac
say "  Sidecar link: $(status_field 'Sidecar link'); $pong"
built_for=$(status_field 'Built for') running_in=$(status_field 'Running in')
[ -n "$built_for" ] && [ "${built_for##*, }" = "${running_in##*, }" ] ||
    fail "push show status: Built for '$built_for', Running in '$running_in'"
say "  Built for: $built_for; Running in: $running_in"

say "edit push.conf, then upgrade to $(basename "$deb2")"
printf '\n; edited by the package test\n[general]\nheartbeat_interval = 7\n' >>"$r/etc/asterisk/push.conf"
cp "$r/etc/asterisk/push.conf" "$work/push.conf.edited"
apt_install "$work/upgrade.log" "$deb2"
grep -q 'res_push.so unloaded from the running Asterisk' "$work/upgrade.log" ||
    fail "the old prerm did not unload the module: $(cat "$work/upgrade.log")"
grep -q 'res_push.so loaded into the running Asterisk' "$work/upgrade.log" ||
    fail "the new postinst did not load the module: $(cat "$work/upgrade.log")"
expect_eq "installed version" "$(in_root dpkg-query -W -f '${Version}' asterisk-res-push)" \
    "$(in_root dpkg-deb -f "$deb2" Version)"
cmp -s "$work/push.conf.edited" "$r/etc/asterisk/push.conf" || fail "the upgrade changed the edited push.conf"
say "  $(in_root dpkg-query -W -f '${Version}' asterisk-res-push) installed; push.conf still ends with: $(tail -n 3 "$r/etc/asterisk/push.conf" | tr '\n' ' ')"
ls "$r"/etc/asterisk/push.conf.dpkg-* 2>/dev/null && fail "the upgrade left push.conf.dpkg-* files"
expect_eq "push.conf after upgrade" "$(stat_of /etc/asterisk/push.conf)" "root:asterisk 640"
module_running || fail "res_push not Running after upgrade"
wait_until 20 link_connected || fail "not connected after upgrade: $(cli 'push show status')"

say "remove: the module is unloaded first"
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y asterisk-res-push >"$work/remove.log" 2>&1 ||
    fail "apt-get remove: $(cat "$work/remove.log")"
grep -q 'res_push.so unloaded from the running Asterisk' "$work/remove.log" ||
    fail "prerm did not unload the module: $(cat "$work/remove.log")"
module_running && fail "res_push still loaded after remove"
cli "core show version" | grep -q '^Asterisk 22' || fail "Asterisk is gone"
# What systemd does when the prerm stops the unit: SIGTERM, then the runtime directory goes.
kill -TERM "$sidecar_pid"
wait "$sidecar_pid" || fail "the sidecar did not exit cleanly on SIGTERM"
[ -e "$r$socket" ] && fail "the sidecar left its socket behind"
rm -rf "${r:?}$runtime"
[ -f "$r/etc/asterisk/push.conf" ] || fail "remove (not purge) deleted the conffile"
[ -e "$r$moddir/res_push.so" ] && fail "remove left res_push.so"

say "purge leaves nothing of ours"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y asterisk-res-push >"$work/purge.log" 2>&1 ||
    fail "apt-get purge: $(cat "$work/purge.log")"
in_root dpkg-query -W -f '${db:Status-Status}' asterisk-res-push 2>/dev/null | grep -qv not-installed &&
    fail "dpkg still knows the package"
rm -rf "${r:?}$pkgdir"
ours >"$work/ours.after"
left=$(comm -13 "$work/ours.before" "$work/ours.after")
[ -z "$left" ] || fail "files left after purge: $left"
for f in passwd group shadow gshadow; do
    cmp -s "$work/$f.before" "$r/etc/$f" || fail "/etc/$f differs after purge: $(diff "$work/$f.before" "$r/etc/$f")"
done
in_root dpkg-statoverride --list | grep -q res-push && fail "a dpkg-statoverride of ours is left"
snapshot >"$work/after.txt"
diff -u "$work/before.txt" "$work/after.txt" >"$work/diff.txt" ||
    fail "the purge did not restore the file tree: $(grep '^[-+][^-+]' "$work/diff.txt")"
module_running && fail "res_push loaded after purge"
cli "database show res_push" | grep -q '^0 results found' ||
    fail "the purge left state in astdb: $(cli 'database show res_push')"
say "  $(wc -l <"$work/after.txt") paths identical to before the install; no file named after us; passwd/group/shadow/gshadow unchanged; astdb family res_push empty"
cli "core show version" | grep -q '^Asterisk 22' || fail "Asterisk is gone after purge"
ok=1
