#!/bin/sh
# Install headunit on this board: what `sudo make install PROFILE=...` runs.
#
#   install.sh PROFILE WHEELHOUSE       (root; or DESTDIR=/some/root for a throw-away tree)
#
# 1. the system users headunit (home /var/lib/headunit, no login; groups dialout video
#    audio gpio, gpio made if missing) and headunit-kiosk (the dashboard's browser),
# 2. a venv at /opt/headunit/venv made offline from the wheelhouse
#    (packaging/wheelhouse.sh), with /usr/local/bin/headunit pointing at it,
# 3. the profile and the files it names in /etc/headunit (root:headunit, 0640),
# 4. the units of systemd/ in /etc/systemd/system, a polkit rule letting the agent
#    power the board off, a udev rule giving /dev/gpiochip* to the group gpio,
# 5. when systemd runs: daemon-reload, enable, (re)start; the kiosk only when cage and
#    chromium are installed.
# Idempotent: run it again to upgrade or to change the profile.
set -eu

here=$(dirname "$(readlink -f "$0")")
. "$here/functions.sh"
tree=$(dirname "$here")
UNITDIR=${UNITDIR:-/etc/systemd/system}
POLKITDIR=${POLKITDIR:-/etc/polkit-1/rules.d}
UDEVDIR=${UDEVDIR:-/etc/udev/rules.d}
BINDIR=${BINDIR:-/usr/local/bin}
MANIFEST=$HU_PREFIX/installed-files  # what uninstall.sh removes outside $HU_PREFIX

[ $# = 2 ] || hu_die "usage: $(basename "$0") PROFILE WHEELHOUSE"
profile=$1
wheelhouse=$(readlink -f "$2")
[ -f "$profile" ] || hu_die "no profile at $profile"
ls "$wheelhouse"/headunit-*.whl >/dev/null 2>&1 || hu_die "no headunit wheel in $wheelhouse"
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    hu_die "installing needs root: sudo make install PROFILE=$profile"
fi
[ -z "$DESTDIR" ] || hu_say "installing into $DESTDIR"

units() {
    for unit in "$tree"/systemd/*.service "$tree"/systemd/*.socket "$tree"/systemd/*.timer \
                "$tree"/systemd/*.path "$tree"/systemd/*.target; do
        [ -f "$unit" ] && echo "$unit"
    done
    return 0
}

polkit_rules() {
    for rule in "$tree"/systemd/*.rules "$here"/polkit/*.rules; do
        [ -f "$rule" ] && echo "$rule"
    done
    return 0
}

# Copy one file in place (mode 0644) and note it in the manifest.
put() {
    mkdir -p "$DESTDIR$2"
    cp "$1" "$DESTDIR$2/$(basename "$1")"
    chmod 0644 "$DESTDIR$2/$(basename "$1")"
    echo "$2/$(basename "$1")" >>"$DESTDIR$MANIFEST.new"
}

was_active=no
if hu_systemd_running && systemctl is-active --quiet headunit.service; then
    was_active=yes
    hu_say "stopping headunit.service for the upgrade"
    systemctl stop headunit.service
fi

hu_make_users
hu_make_state_dir
hu_make_venv "$wheelhouse"
HU_NO_RESTART=1 "$here/install-profile.sh" "$profile"

: >"$DESTDIR$MANIFEST.new"
for unit in $(units); do put "$unit" "$UNITDIR"; done
for rule in $(polkit_rules); do put "$rule" "$POLKITDIR"; done
for rule in "$here"/udev/*.rules; do put "$rule" "$UDEVDIR"; done
mkdir -p "$DESTDIR$BINDIR"
ln -sfn "$HU_PREFIX/venv/bin/headunit" "$DESTDIR$BINDIR/headunit"
echo "$BINDIR/headunit" >>"$DESTDIR$MANIFEST.new"
mv "$DESTDIR$MANIFEST.new" "$DESTDIR$MANIFEST"
hu_say "units: $(units | xargs -r -n1 basename | xargs) in $UNITDIR"

hu_udev_reload
if hu_systemd_running; then
    systemctl daemon-reload
    systemctl enable --quiet headunit.service
    systemctl restart headunit.service
    hu_say "headunit.service enabled and started ($( [ $was_active = yes ] && echo restarted on the new version || echo first start)); follow it with: journalctl -fu headunit"
    if [ -f "$DESTDIR$UNITDIR/headunit-kiosk.service" ]; then
        if hu_kiosk_possible; then
            systemctl enable --quiet headunit-kiosk.service
            systemctl restart headunit-kiosk.service
            hu_say "headunit-kiosk.service enabled and started: the dashboard on the touchscreen"
        else
            hu_say "headunit-kiosk.service not enabled: it needs the Debian packages cage and chromium"
        fi
    fi
else
    hu_say "systemd is not running here: skipped daemon-reload, enable and start."
    hu_say "on the board: sudo systemctl daemon-reload && sudo systemctl enable --now headunit.service"
fi
hu_say "installed $("$DESTDIR$HU_PREFIX/venv/bin/headunit" --version)"
