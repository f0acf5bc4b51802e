#!/bin/bash
# Build dist/headunit_<version>_<arch>.deb with dpkg-deb: what `make deb` runs.
#
#   build-deb.sh WHEELHOUSE OUT_FOLDER [PROFILE]
#
# The package ships the wheelhouse (packaging/wheelhouse.sh) in /opt/headunit/wheels and
# its postinst makes /opt/headunit/venv from it with pip --no-index: the car needs no
# network. A venv cannot be built here and moved (its scripts and pyvenv.cfg name the
# absolute path and the Python it was made with), and building it at /opt/headunit on
# the build machine would need that path free and root; making it on the car from wheels
# is the honest way, and it is made with the car's own python3.
#
# With PROFILE, the car's profile and the files it names go into /etc/headunit as
# conffiles: one package per car, installed and started with nothing else to do.
# Architecture is "all" when every wheel is pure Python; otherwise it is this machine's
# (dpkg --print-architecture) and python3 is pinned to the minor version the wheels
# were built for: build on the board's architecture.
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
tree=$(dirname "$here")
build=${HU_BUILD:-$tree/build}
say() { echo "headunit: $*"; }

[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: $(basename "$0") WHEELHOUSE OUT_FOLDER [PROFILE]" >&2; exit 2; }
wheelhouse=$1
out=$2
profile=${3:-}
command -v dpkg-deb >/dev/null || { echo "headunit: dpkg-deb is missing (Debian package dpkg)" >&2; exit 1; }

own_wheel=$(ls "$wheelhouse"/headunit-*.whl)
version=$(basename "$own_wheel" | cut -d- -f2)

# "all" for pure wheels; else this architecture, and python3 within the wheels' minor version
architecture() {
    if ls "$wheelhouse" | grep -qv -- '-none-any\.whl$'; then
        dpkg --print-architecture
    else
        echo all
    fi
}

python_depends() {
    local tag
    tag=$(ls "$wheelhouse" | grep -o -- '-cp3[0-9]*-cp3[0-9]*-' | head -n1 | cut -d- -f2 || true)
    if [ -n "$tag" ]; then
        local minor=${tag#cp3}
        echo "python3 (>= 3.$minor), python3 (<< 3.$((minor + 1)))"
    else
        echo "python3 (>= 3.11)"
    fi
}

# KiB on disk: the package's files plus the venv postinst unpacks from the wheels
installed_size() {
    local files venv
    files=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    venv=$(/usr/bin/python3 -c 'import sys, zipfile
print(sum(i.file_size for w in sys.argv[1:] for i in zipfile.ZipFile(w).infolist()) // 1024)' "$wheelhouse"/*.whl)
    echo $((files + venv))
}

arch=$(architecture)
stage=$build/deb/headunit_${version}_${arch}
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/opt/headunit/wheels" "$stage/lib/systemd/system" \
    "$stage/usr/share/headunit" "$stage/usr/share/doc/headunit" "$stage/usr/sbin" "$stage/usr/bin" \
    "$stage/etc/headunit"

cp "$wheelhouse"/*.whl "$stage/opt/headunit/wheels/"
for unit in "$tree"/systemd/*.service "$tree"/systemd/*.socket "$tree"/systemd/*.timer \
            "$tree"/systemd/*.path "$tree"/systemd/*.target; do
    [ -f "$unit" ] && install -m 0644 "$unit" "$stage/lib/systemd/system/"
done
for rule in "$tree"/systemd/*.rules "$here"/polkit/*.rules; do
    [ -f "$rule" ] || continue
    mkdir -p "$stage/usr/share/polkit-1/rules.d"
    install -m 0644 "$rule" "$stage/usr/share/polkit-1/rules.d/"
done
mkdir -p "$stage/lib/udev/rules.d"
install -m 0644 "$here"/udev/*.rules "$stage/lib/udev/rules.d/"
install -m 0644 "$here/functions.sh" "$here/environment" "$stage/usr/share/headunit/"
install -m 0755 "$here/profile_files.py" "$here/install-profile.sh" "$stage/usr/share/headunit/"
ln -s ../share/headunit/install-profile.sh "$stage/usr/sbin/headunit-install-profile"
ln -s /opt/headunit/venv/bin/headunit "$stage/usr/bin/headunit"
install -m 0644 "$tree/README.md" "$stage/usr/share/doc/headunit/"
cat >"$stage/usr/share/doc/headunit/copyright" <<'EOF'
headunit: telematics agent for in-car Linux boards.
License: GPL-3.0-or-later (see /usr/share/common-licenses/GPL-3).
The wheels in /opt/headunit/wheels are the agent's Python dependencies, each under its
own license, stated in its *.dist-info folder once installed in /opt/headunit/venv.
EOF

install -m 0640 "$here/environment" "$stage/etc/headunit/environment"
if [ -n "$profile" ]; then
    /usr/bin/python3 "$here/profile_files.py" "$profile" "$stage/etc/headunit"
    find "$stage/etc/headunit" -type f -exec chmod 0640 {} +
    find "$stage/etc/headunit" -type d -exec chmod 0750 {} +
fi
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) >"$stage/DEBIAN/conffiles"

install -m 0755 "$here/deb/postinst" "$here/deb/prerm" "$here/deb/postrm" "$stage/DEBIAN/"
cat >"$stage/DEBIAN/control" <<EOF
Package: headunit
Version: $version
Architecture: $arch
Maintainer: ${HU_MAINTAINER:-headunit maintainers <headunit@localhost>}
Installed-Size: $(installed_size)
Depends: $(python_depends), python3-venv, adduser
Recommends: systemd, polkitd, udev, ffmpeg, chromium, cage
Suggests: gpsd, can-utils
Section: misc
Priority: optional
Description: telematics agent for in-car Linux boards
 Reads the vehicle (CAN with DBC decoding, OBD-II, GNSS, GPIO ignition sense) into one
 state keyed by COVESA VSS names and keeps an XMPP session whose presence follows the
 drive; publishes telemetry to the fleet without loss; runs as the systemd service
 headunit.service under its own user.
 .
 The agent runs from /opt/headunit/venv, made at install time from the wheels this
 package ships, without network. Install a car's profile with
 headunit-install-profile CAR.toml.
EOF

mkdir -p "$out"
deb=$out/headunit_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
say "built $deb ($(du -h "$deb" | cut -f1)$( [ -n "$profile" ] && echo ", with the profile $profile"))"
