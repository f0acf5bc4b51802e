# headunit — two commands: `make run` (the demo car on a local Prosody) and `make test`.
# Everything they need is set up here: Debian packages (installed when root, otherwise
# the exact apt-get line is printed), and a virtualenv in .venv for the Python packages.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR := run
XMPP_PORT ?= 15222
SPEED ?= 1
PROFILE ?= profiles/demo.toml

# Debian bookworm packages: the XMPP server for the demo and the tests, openssl for the
# throw-away CA, gpsd for the gpsd-source test, ffmpeg for the V4L2 camera, chromium for
# the dashboard's browser tests and screenshots (Playwright drives it; no browser download),
# python3-venv for Debian's own python3, which makes the car's venv (make install, make deb),
# debootstrap for the package test (a throw-away bookworm root to install the .deb into),
# systemd for `systemd-analyze verify` of the units, polkitd, dbus-daemon and dbus-bin for
# the test of the polkit rule that lets the service power the board off.
APT_PACKAGES := prosody lua-unbound openssl gpsd ffmpeg chromium fonts-dejavu-core fonts-liberation \
	python3-venv debootstrap systemd polkitd dbus-daemon dbus-bin

.DEFAULT_GOAL := help
.PHONY: help setup deps venv run watch test typecheck bench screenshots clean distclean \
	install uninstall deb wheelhouse

help:
	@echo "make run        set up, start a local Prosody and run the demo car (Ctrl-C stops)"
	@echo "make watch      (in a second terminal) follow the demo car's presence as the operator sees it"
	@echo "make test       set up, then type-check and run the whole test suite"
	@echo "make bench      measure the CAN pipeline, memory and start-up; writes BENCHMARKS.md"
	@echo "make screenshots  the dashboard's screens at 800x480, day and night, into docs/screenshots/"
	@echo "make setup      only install what is missing (Debian packages, .venv)"
	@echo "make clean      remove the run folder (demo server data, certificates)"
	@echo "sudo make install PROFILE=car.toml   install on this board as the systemd service headunit"
	@echo "sudo make uninstall [PURGE=1]        remove it (PURGE=1: also /etc/headunit, the data and the user)"
	@echo "make deb [PROFILE=car.toml]          build dist/headunit_VERSION_ARCH.deb (installs with no network)"
	@echo "variables: SPEED=10 (replay faster), XMPP_PORT=$(XMPP_PORT), PROFILE=$(PROFILE)"

setup: deps venv

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages. Run this, then make again:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c 'import agent, can, cantools, slixmpp, pynmea2, serial, gpiozero, pytest' \
	  || { echo "the Python packages did not install; see the messages above"; exit 1; }
	@touch $@

run: setup
	@$(PY) -m devserver run --folder $(RUN_DIR) --port $(XMPP_PORT) \
	  --account car --account operator --account fleet --restart-on 75 -- \
	  $(VENV)/bin/headunit run $(PROFILE) --speed $(SPEED)

watch: venv
	@$(PY) -m devserver.watch --folder $(RUN_DIR)

typecheck: setup
	@$(PY) -m mypy

test: setup typecheck
	@$(PY) -m pytest

bench: setup
	@$(PY) -m tests.bench

screenshots: setup
	@$(PY) -m tests.harness.screenshots --out docs/screenshots

# On the car (packaging/): a venv in /opt/headunit made offline from a wheelhouse built
# here (build/wheelhouse; only building it needs the network, once), the profile and its
# files in /etc/headunit, the units of systemd/. DESTDIR=/some/root installs into a
# throw-away tree (no user, no chown, no systemctl): how the tests do it.
DESTDIR ?=
PURGE ?=
DISTDIR ?= dist
WHEELHOUSE := build/wheelhouse
PROFILE_GIVEN = $(filter command line environment,$(origin PROFILE))

wheelhouse:
	@packaging/wheelhouse.sh $(WHEELHOUSE)

install:
	@test -n "$(PROFILE_GIVEN)" || { echo "make install needs the car's profile: sudo make install PROFILE=path/to/car.toml"; exit 2; }
	@test -n "$(DESTDIR)" || test "$$(id -u)" = 0 || { echo "make install needs root: sudo make install PROFILE=$(PROFILE)"; exit 1; }
	@packaging/wheelhouse.sh $(WHEELHOUSE)
	@DESTDIR='$(DESTDIR)' packaging/install.sh '$(PROFILE)' $(WHEELHOUSE)

uninstall:
	@DESTDIR='$(DESTDIR)' PURGE='$(PURGE)' packaging/uninstall.sh

deb:
	@packaging/wheelhouse.sh $(WHEELHOUSE)
	@packaging/build-deb.sh $(WHEELHOUSE) $(DISTDIR) $(if $(PROFILE_GIVEN),'$(PROFILE)')

clean:
	rm -rf $(RUN_DIR)

distclean: clean
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache build dist
