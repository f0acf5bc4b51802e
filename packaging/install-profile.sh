#!/bin/sh
# Install a car's profile as /etc/headunit/profile.toml, with the files it names (DBC,
# password file, CA, ...), readable by root and the headunit user only; then check it
# with the installed agent and, when systemd runs, restart the service on it.
#
#   install-profile.sh PROFILE          (root; DESTDIR=/some/root for a throw-away tree)
#
# Shipped by the Debian package as /usr/sbin/headunit-install-profile. Idempotent: the
# previous profile, if different, is kept as profile.toml.old.
set -eu

here=$(dirname "$(readlink -f "$0")")
. "$here/functions.sh"

[ $# = 1 ] || hu_die "usage: $(basename "$0") PROFILE"
profile=$1
[ -f "$profile" ] || hu_die "no profile at $profile"
[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || hu_die "installing a profile needs root (sudo)"

"$HU_PYTHON" "$here/profile_files.py" "$profile" "$DESTDIR$HU_ETC" || exit 2
if [ ! -f "$DESTDIR$HU_ETC/environment" ]; then
    cp "$here/environment" "$DESTDIR$HU_ETC/environment"
fi
hu_lock_etc
if [ -n "$DESTDIR" ]; then
    hu_say "profile installed as $DESTDIR$HU_ETC/profile.toml (mode 0640; no chown under a DESTDIR)"
else
    hu_say "profile installed as $HU_ETC/profile.toml (root:$HU_USER, mode 0640)"
fi

if [ -x "$DESTDIR$HU_PREFIX/venv/bin/headunit" ]; then
    hu_check_profile
fi
[ "${HU_NO_RESTART:-}" != 1 ] && [ -z "$DESTDIR" ] || exit 0
if hu_systemd_running; then
    systemctl enable --quiet headunit.service
    systemctl restart headunit.service
    hu_say "headunit.service enabled and restarted on the new profile"
else
    hu_say "systemd is not running here: on the board, sudo systemctl enable --now headunit.service"
fi
