#!/bin/bash
# Build the wheelhouse: headunit's own wheel, built from this source tree, and a wheel of
# every dependency, all in one folder. The venv on the car is made from it offline
# (pip install --no-index), so the car needs no network; only this step does, the first
# time (later runs reuse build/wheel-cache and work offline).
#
#   wheelhouse.sh OUT_FOLDER      (HU_PYTHON: the Python the car runs, default /usr/bin/python3)
#
# The wheels are made by and for HU_PYTHON: wheels with compiled code are tied to its
# version and to this machine's architecture. Build on the board's architecture (or
# one like it: arm64 for a 64-bit Raspberry Pi OS).
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
. "$here/functions.sh"

[ $# = 1 ] || hu_die "usage: $(basename "$0") OUT_FOLDER"
out=$1
tree=$(dirname "$here")
build=${HU_BUILD:-$tree/build}
cache=$build/wheel-cache
tool=$build/pip-tool
source=$build/source

"$HU_PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || hu_die "$HU_PYTHON cannot make a venv: install the Debian package python3-venv"
if [ ! -x "$tool/bin/pip" ]; then
    hu_say "making a pip for $HU_PYTHON in $tool"
    "$HU_PYTHON" -m venv "$tool"
fi
pip() {  # without the noise of index folders that a machine's pip.conf names but lacks
    "$tool/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
}

# A clean copy of the package's files: building in the tree would leave build/lib behind,
# and a module deleted from the tree would still ship from there.
rm -rf "$source"
mkdir -p "$source" "$cache"
(cd "$tree" && tar --exclude=__pycache__ -cf - setup.cfg pyproject.toml README.md agent drivers) \
    | tar -C "$source" -xf -

rm -rf "$out"
mkdir -p "$out"
hu_say "building the wheelhouse in $out"
if ! pip wheel --quiet --no-index --find-links "$cache" --wheel-dir "$out" "$source" >/dev/null; then
    hu_say "fetching what the cache lacks from the package index"
    pip download --quiet --dest "$cache" "setuptools>=61" wheel
    pip wheel --quiet --find-links "$cache" --wheel-dir "$out" "$source"
fi
for wheel in "$out"/*.whl; do
    case $(basename "$wheel") in
        headunit-*) ;;
        *) cp -n "$wheel" "$cache/" ;;
    esac
done
ls "$out"/headunit-*.whl >/dev/null 2>&1 || hu_die "no headunit wheel was built in $out"
hu_say "wheelhouse: $(ls "$out" | wc -l) wheels"
