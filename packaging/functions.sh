# Shell functions shared by install.sh, uninstall.sh, install-profile.sh and the Debian
# package's maintainer scripts (shipped as /usr/share/headunit/functions.sh). POSIX sh.
#
# Every path is taken under $DESTDIR (empty on a real install). With a DESTDIR the
# system is not touched: no user is created, ownership is left alone (only modes are
# set) and systemd is not called; that is how the tests install into a throw-away root.

HU_USER=headunit
HU_GROUPS="dialout video audio gpio"  # the unit's SupplementaryGroups=
HU_KIOSK_USER=headunit-kiosk
HU_KIOSK_GROUPS="video render input audio"  # the kiosk unit's; each joined where it exists
HU_PREFIX=${HU_PREFIX:-/opt/headunit}
HU_ETC=${HU_ETC:-/etc/headunit}
HU_STATE=${HU_STATE:-/var/lib/headunit}
HU_PYTHON=${HU_PYTHON:-/usr/bin/python3}  # Debian's: the venv must outlive any other Python
DESTDIR=${DESTDIR:-}

hu_say() {
    echo "headunit: $*"
}

hu_die() {
    echo "headunit: $*" >&2
    exit 1
}

# True when the system was booted with systemd (sd_booted(3)) and we install for real.
hu_systemd_running() {
    [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]
}

# A system user with a group of its name, no login shell; created once.
hu_system_user() {  # NAME HOME COMMENT
    getent group "$1" >/dev/null || addgroup --system --quiet "$1"
    if ! getent passwd "$1" >/dev/null; then
        adduser --system --quiet --ingroup "$1" --home "$2" --no-create-home \
            --shell /usr/sbin/nologin --comment "$3" "$1"
        hu_say "created the system user $1"
    fi
}

# Add a user to each of the groups that exist here.
hu_join() {  # USER GROUP...
    user=$1
    shift
    for group in "$@"; do
        if getent group "$group" >/dev/null; then
            adduser --quiet "$user" "$group" >/dev/null
        else
            hu_say "no group $group on this system: $user not added to it"
        fi
    done
}

# The agent's user (home = its state folder) and the kiosk browser's (no home; it can
# read nothing of the agent's). The agent's unit names the group gpio, which plain
# Debian lacks: it is made here, and the udev rule 60-headunit-gpio.rules gives it
# /dev/gpiochip* as Raspberry Pi OS does.
hu_make_users() {
    if [ -n "$DESTDIR" ]; then
        hu_say "DESTDIR set: not creating the users $HU_USER and $HU_KIOSK_USER (ownership is left to whoever installs the tree)"
        return 0
    fi
    if ! getent group gpio >/dev/null; then
        addgroup --system --quiet gpio
        hu_say "created the group gpio (for /dev/gpiochip*, see 60-headunit-gpio.rules)"
    fi
    hu_system_user "$HU_USER" "$HU_STATE" "headunit telematics agent"
    # shellcheck disable=SC2086 # one word per group
    hu_join "$HU_USER" $HU_GROUPS
    hu_system_user "$HU_KIOSK_USER" /nonexistent "headunit dashboard kiosk"
    # shellcheck disable=SC2086
    hu_join "$HU_KIOSK_USER" $HU_KIOSK_GROUPS
}

# Remove both users and their groups (the group gpio stays: others may use it).
hu_remove_users() {
    for user in "$HU_KIOSK_USER" "$HU_USER"; do
        if getent passwd "$user" >/dev/null; then
            deluser --system --quiet "$user"
        fi
        if getent group "$user" >/dev/null; then
            delgroup --system --quiet "$user"
        fi
    done
}

# The kiosk unit can only work with cage and Chromium installed (Debian packages).
hu_kiosk_possible() {
    [ -x /usr/bin/cage ] && [ -x /usr/bin/chromium ]
}

# Reload udev's rules and apply them to the GPIO chips (when udev runs).
hu_udev_reload() {
    if [ -z "$DESTDIR" ] && command -v udevadm >/dev/null && [ -d /run/udev ]; then
        udevadm control --reload-rules || true
        udevadm trigger --subsystem-match=gpio --action=add || true
    fi
}

# chown that is skipped under a DESTDIR (the user does not exist there).
hu_chown() {
    if [ -z "$DESTDIR" ]; then
        chown "$@"
    fi
}

# The state folder: only the service user may enter it (the unit's StateDirectoryMode=).
hu_make_state_dir() {
    mkdir -p "$DESTDIR$HU_STATE"
    chmod 0700 "$DESTDIR$HU_STATE"
    hu_chown "$HU_USER:$HU_USER" "$DESTDIR$HU_STATE"
}

# /etc/headunit and all in it: root:headunit, nothing world-readable (password, CA, keys).
hu_lock_etc() {
    etc="$DESTDIR$HU_ETC"
    [ -d "$etc" ] || return 0
    hu_chown -R "root:$HU_USER" "$etc"
    find "$etc" -type d -exec chmod 0750 {} +
    find "$etc" -type f -exec chmod 0640 {} +
}

# A fresh venv at $HU_PREFIX/venv with headunit installed from a wheelhouse, offline.
# A venv is not relocatable, so it is always made at the path it will run from.
hu_make_venv() {
    wheelhouse=$1
    venv="$DESTDIR$HU_PREFIX/venv"
    "$HU_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || hu_die "$HU_PYTHON is older than Python 3.11"
    "$HU_PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || hu_die "$HU_PYTHON cannot make a venv: install the Debian package python3-venv"
    hu_say "making the venv $venv (offline, from $wheelhouse)"
    mkdir -p "$DESTDIR$HU_PREFIX"
    "$HU_PYTHON" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --isolated --quiet --no-index --no-cache-dir \
        --disable-pip-version-check --find-links "$wheelhouse" headunit
    "$venv/bin/headunit" --version >/dev/null || hu_die "the installed agent does not start: $venv/bin/headunit"
}

# Run a command as the service user (to prove it can read its files); as is under a DESTDIR.
hu_as_service_user() {
    if [ -n "$DESTDIR" ]; then
        "$@"
    else
        runuser -u "$HU_USER" -- "$@"
    fi
}

# Load the installed profile with the installed agent, as the service user, with the
# service's environment file. A warning, not a failure: the profile may be completed later.
hu_check_profile() {
    profile="$DESTDIR$HU_ETC/profile.toml"
    [ -f "$profile" ] || return 0
    if output=$(
        if [ -f "$DESTDIR$HU_ETC/environment" ]; then
            set -a
            # shellcheck disable=SC1090 # the service's own environment file
            . "$DESTDIR$HU_ETC/environment"
            set +a
        fi
        hu_as_service_user "$DESTDIR$HU_PREFIX/venv/bin/headunit" check "$profile" 2>&1
    ); then
        hu_say "profile: $output"
    else
        hu_say "WARNING: the installed profile does not load yet; fix $HU_ETC/profile.toml:"
        echo "  $output"
    fi
}
