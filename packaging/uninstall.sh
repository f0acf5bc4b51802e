#!/bin/sh
# Remove what install.sh installed: what `sudo make uninstall` runs.
#
#   uninstall.sh           keeps the data (/var/lib/headunit), /etc/headunit and the user
#   PURGE=1 uninstall.sh   removes those too
#
# (root; or DESTDIR=/some/root for a throw-away tree). Idempotent.
set -eu

here=$(dirname "$(readlink -f "$0")")
. "$here/functions.sh"
MANIFEST=$HU_PREFIX/installed-files
PURGE=${PURGE:-}

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    hu_die "uninstalling needs root: sudo make uninstall"
fi

# The units, polkit rules and links install.sh put outside $HU_PREFIX.
installed() {
    if [ -f "$DESTDIR$MANIFEST" ]; then
        cat "$DESTDIR$MANIFEST"
    fi
}

if hu_systemd_running; then
    for path in $(installed); do
        case $path in
            *.service|*.socket|*.timer|*.path|*.target)
                systemctl disable --now --quiet "$(basename "$path")" || true ;;
        esac
    done
fi
for path in $(installed); do
    rm -f "$DESTDIR$path"
done
if [ -d "$DESTDIR$HU_PREFIX" ]; then
    rm -rf "$DESTDIR$HU_PREFIX"
    hu_say "removed $DESTDIR$HU_PREFIX, the units and the headunit command"
else
    hu_say "nothing installed in $DESTDIR$HU_PREFIX"
fi
if hu_systemd_running; then
    systemctl daemon-reload
fi
hu_udev_reload

if [ "$PURGE" = 1 ]; then
    rm -rf "$DESTDIR$HU_ETC" "$DESTDIR$HU_STATE"
    if [ -z "$DESTDIR" ]; then
        hu_remove_users
    fi
    hu_say "purged $DESTDIR$HU_ETC and $DESTDIR$HU_STATE$( [ -n "$DESTDIR" ] || echo " and the users $HU_USER, $HU_KIOSK_USER")"
else
    hu_say "kept $DESTDIR$HU_ETC (profile, secrets), $DESTDIR$HU_STATE (the agent's data)$( [ -n "$DESTDIR" ] || echo " and the users");"
    hu_say "PURGE=1 removes them too"
fi
