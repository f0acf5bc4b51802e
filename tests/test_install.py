"""Installing on the car: `make deb` and `make install`, exercised in a throw-away Debian root.

The package is installed with dpkg into a minimal Debian bookworm made by debootstrap
(cached as a tarball in the tests' machine cache, tests/harness/cache.py, so every clone
reuses it; unpacked afresh for each test), through
chroot: its maintainer scripts run for real (user, offline venv, permissions, units
enabled with deb-systemd-helper), the installed agent checks its profile and logs in to
the test session's Prosody as the headunit user, and removal and purge are checked for
what they leave. install.sh / uninstall.sh run in such a root too (a real user), and
`make install DESTDIR=...` into a plain folder. systemd does not run here (no PID 1):
enabling shows as the links it makes; starting the unit is not tested here.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import re
import shutil
import stat
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent import __version__
from tests.harness.agentproc import REPO, AgentProcess
from tests.harness.cache import cache_root, cached_file, discard, locked
from devserver.prosody import AccountFactory, ServerInfo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SUITE = "bookworm"
INCLUDE = ("python3", "python3-venv")
MIRROR = os.environ.get("HEADUNIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
WANTS = "etc/systemd/system/multi-user.target.wants/headunit.service"  # what enabling makes
POLKIT_RULES = sorted((REPO / "packaging/polkit").glob("*.rules"))  # the power-off rule (tests/test_service.py)
KIOSK_WANTS = "etc/systemd/system/multi-user.target.wants/headunit-kiosk.service"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("PROFILE", "DESTDIR", "PURGE", "MAKEFLAGS")}


def run(command: list[str], *, ok: bool = True, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``ok`` it must succeed, and its output is shown if it does not."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if ok:
        assert result.returncode == 0, f"{command} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def needs(*programs: str, root: bool = False) -> None:
    if root and os.geteuid() != 0:
        pytest.skip("chroot and dpkg into a root need root")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (make setup installs the Debian packages)")


# --- the throw-away Debian root ------------------------------------------------------

def bookworm_tarball() -> Path:
    """A minimal bookworm with python3 and python3-venv, made once per machine by debootstrap (minutes)."""
    architecture = run(["dpkg", "--print-architecture"]).stdout.strip()
    inputs = {"suite": SUITE, "variant": "minbase", "include": ",".join(INCLUDE), "mirror": MIRROR,
              "architecture": architecture, "format": "tar 1"}
    return cached_file(f"{SUITE}-minbase-root", ".tar", inputs, debootstrap_into_tarball)


def debootstrap_into_tarball(tarball: Path) -> None:
    work = tarball.with_name(tarball.name + ".d")
    shutil.rmtree(work, ignore_errors=True)
    debs = cache_root() / "debootstrap-debs"  # the .deb files, kept for the next rebuild
    debs.mkdir(parents=True, exist_ok=True)
    try:
        result = run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
                      f"--cache-dir={debs}", SUITE, str(work), MIRROR], ok=False, timeout=900)
        assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
        run(["tar", "-C", str(work), "-cf", str(tarball), "."])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unpack_root(path: Path) -> None:
    """Unpack the cached root into ``path``; a cached tarball that does not unpack is made again."""
    tarball = bookworm_tarball()
    if run(["tar", "-C", str(path), "-xf", str(tarball)], ok=False).returncode != 0:
        discard(tarball)
        shutil.rmtree(path)
        path.mkdir()
        run(["tar", "-C", str(path), "-xf", str(bookworm_tarball())])


class Root:
    """An unpacked Debian root; commands run in it through chroot with a clean environment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __truediv__(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def command(self, *argv: str, user: str | None = None, **env: str) -> list[str]:
        spec = [f"--userspec={self.ids(user)}"] if user else []
        variables = [f"{k}={v}" for k, v in {"PATH": PATH, "LANG": "C.UTF-8", **env}.items()]
        return ["chroot", *spec, str(self.path), "env", "-i", *variables, *argv]

    def run(self, *argv: str, ok: bool = True, user: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        return run(self.command(*argv, user=user, **env), ok=ok)

    def ids(self, user: str | None) -> str:
        """uid:gid from the root's own passwd (chroot would look the name up outside)."""
        for line in (self / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return f"{fields[2]}:{fields[3]}"
        raise AssertionError(f"no user {user} in {self / 'etc/passwd'}")

    def entry(self, database: str, name: str) -> list[str] | None:
        """A line of etc/passwd or etc/group, split, or None."""
        for line in (self / f"etc/{database}").read_text().splitlines():
            if line.split(":")[0] == name:
                return line.split(":")
        return None

    def car_source(self, password: str, ca_file: Path) -> str:
        """The demo profile with its secrets, put in the root; its path there."""
        car_profile_folder(self / "tmp/car", password, ca_file)
        return "/tmp/car/profiles/demo.toml"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    """A fresh bookworm root for one test, removed afterwards (it is a few hundred MB)."""
    needs("debootstrap", "chroot", "dpkg-deb", root=True)
    path = tmp_path / "root"
    path.mkdir()
    unpack_root(path)
    try:
        yield Root(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- the packages ----------------------------------------------------------------------

@contextmanager
def clone_build() -> Iterator[None]:
    """Hold the lock on the clone's build/, with build/wheel-cache in the machine cache.

    packaging/wheelhouse.sh keeps the dependencies' wheels in build/wheel-cache; made a
    link into the tests' machine cache (unless the clone has its own), a fresh clone
    builds its wheelhouse offline from there. `make deb`, `make wheelhouse` and `make
    install` all build in the clone's build/ (source, deb, wheelhouse): the lock keeps two
    of them (tests on other xdist workers, or another clone's run filling the shared
    wheel cache) from building at the same time.
    """
    link = REPO / "build" / "wheel-cache"
    with locked("build") as cache:
        if not link.exists() and not link.is_symlink():
            (cache / "wheel-cache").mkdir(exist_ok=True)
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(cache / "wheel-cache")
        yield


def make(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``make -s ARGS`` in the clone (see :func:`clone_build`)."""
    with clone_build():
        return run(["make", "-s", *args], ok=ok, env=MAKE_ENV)


def make_deb(out: Path, profile: Path | None = None) -> Path:
    needs("dpkg-deb")
    make("deb", f"DISTDIR={out}", *([f"PROFILE={profile}"] if profile else []))
    debs = list(out.glob("headunit_*.deb"))
    assert len(debs) == 1, f"make deb left {debs} in {out}"
    return debs[0]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make wheelhouse`: the agent's wheel and its dependencies' (cached in build/wheel-cache).

    Copied out of build/wheelhouse before the lock is let go: the next `make deb` remakes it.
    """
    copy = tmp_path_factory.mktemp("wheelhouse") / "wheelhouse"
    with clone_build():
        run(["make", "-s", "wheelhouse"], env=MAKE_ENV)
        shutil.copytree(REPO / "build" / "wheelhouse", copy)
    return copy


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make deb`: the package with no profile (one for any car)."""
    return make_deb(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def car_deb(tmp_path_factory: pytest.TempPathFactory, prosody_server: ServerInfo) -> Path:
    """`make deb PROFILE=...`: the package for one car, its profile and secrets inside."""
    folder = tmp_path_factory.mktemp("car")
    profile = car_profile_folder(folder / "clone", "p4ss-in-the-package", prosody_server.ca_file)
    return make_deb(folder / "dist", profile)


def car_profile_folder(folder: Path, password: str, ca_file: Path) -> Path:
    """The demo profile with its secrets in ``folder``, laid out as a clone holds them (../run/...)."""
    shutil.copytree(REPO / "profiles", folder / "profiles", ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    (folder / "run/demo").mkdir(parents=True)
    (folder / "run/pki").mkdir(parents=True)
    (folder / "run/demo/car.password").write_text(password + "\n")
    shutil.copyfile(ca_file, folder / "run/pki/ca.pem")
    return folder / "profiles/demo.toml"


def deb_field(info: str, name: str) -> str:
    match = re.search(rf"^ {name}: (.*)$", info, re.MULTILINE)
    assert match, f"no {name} in dpkg-deb --info:\n{info}"
    return match.group(1)


def requirement_names() -> set[str]:
    """The distribution names setup.cfg requires, normalised as wheel file names spell them."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    return {re.split(r"[<>=!~ ;\[]", line)[0].lower().replace("-", "_") for line in lines}


# Under xdist the tests sharing a module fixture's package run on one worker: it is made once.
@pytest.mark.xdist_group("install-deb")
def test_make_deb_builds_a_package_with_the_wheels_units_and_maintainer_scripts(deb: Path) -> None:
    info = run(["dpkg-deb", "--info", str(deb)]).stdout
    arch = deb_field(info, "Architecture")
    assert deb.name == f"headunit_{__version__}_{arch}.deb"
    assert arch in ("all", run(["dpkg", "--print-architecture"]).stdout.strip())
    assert deb_field(info, "Package") == "headunit"
    assert deb_field(info, "Version") == __version__
    depends = deb_field(info, "Depends")
    assert "python3 (>= 3.11" in depends and "python3-venv" in depends and "adduser" in depends
    if arch != "all":  # compiled wheels: one Python minor version only
        assert re.search(r"python3 \(<< 3\.\d+\)", depends), depends
    assert "chromium" in deb_field(info, "Recommends") and "ffmpeg" in deb_field(info, "Recommends")
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", info, re.MULTILINE), (script, info)

    contents = run(["dpkg-deb", "--contents", str(deb)]).stdout
    files = {line.split()[5].lstrip("."): line for line in contents.splitlines()}
    wheels = {Path(f).name for f in files if f.startswith("/opt/headunit/wheels/")}
    assert f"headunit-{__version__}-py3-none-any.whl" in wheels
    shipped = {w.split("-")[0].lower() for w in wheels}
    assert requirement_names() <= shipped, f"dependencies without a wheel: {requirement_names() - shipped}"
    for unit in (REPO / "systemd").glob("*.service"):
        assert f"/lib/systemd/system/{unit.name}" in files
    for path in ("/usr/share/headunit/functions.sh", "/lib/udev/rules.d/60-headunit-gpio.rules", "/usr/share/headunit/profile_files.py",
                 "/usr/sbin/headunit-install-profile", "/usr/bin/headunit", "/etc/headunit/environment",
                 "/usr/share/doc/headunit/copyright"):
        assert path in files, path
    assert POLKIT_RULES, "no polkit rule: the agent could not power the board off"
    for rule in POLKIT_RULES:
        assert f"/usr/share/polkit-1/rules.d/{rule.name}" in files, rule
    assert files["/etc/headunit/environment"].startswith("-rw-r----- root/root")
    conffiles = run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout.split()
    assert conffiles == ["/etc/headunit/environment"]
    assert not any(f.startswith("/opt/headunit/venv") for f in files), "a venv cannot be shipped built"


@pytest.mark.xdist_group("install-car-deb")
def test_make_deb_with_a_profile_ships_it_and_its_files_as_conffiles(car_deb: Path, tmp_path: Path) -> None:
    deb = car_deb
    conffiles = set(run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout.split())
    assert {"/etc/headunit/profile.toml", "/etc/headunit/car.password", "/etc/headunit/ca.pem",
            "/etc/headunit/demo/demo.dbc", "/etc/headunit/demo/drive.log",
            "/etc/headunit/environment"} <= conffiles
    contents = run(["dpkg-deb", "--contents", str(deb)]).stdout
    etc = [line for line in contents.splitlines() if line.split()[5].startswith("./etc/headunit/")]
    assert etc and all(line[7:10] == "---" for line in etc), "something in /etc/headunit is world-readable"
    extracted = tmp_path / "x"
    run(["dpkg-deb", "--extract", str(deb), str(extracted)])
    text = (extracted / "etc/headunit/profile.toml").read_text()
    assert 'password_file = "car.password"' in text and 'ca_file = "ca.pem"' in text
    assert re.search(r"^# data_dir = ", text, re.MULTILINE), "the profile's data folder must not win over /var/lib"


# --- the package's life in a bookworm root --------------------------------------------

def installed_profile_runs(root: Root, server: ServerInfo, jid: str) -> None:
    """The installed agent, as the headunit user, logs in with the installed password and CA."""
    agent = AgentProcess(server, jid, "unused")
    agent.command = root.command(
        "/usr/bin/headunit", "run", "/etc/headunit/profile.toml", "--speed", "20", user="headunit",
        STATE_DIRECTORY="/var/lib/headunit", HEADUNIT_JID=jid, HEADUNIT_HOST=server.host,
        HEADUNIT_PORT=str(server.port), HEADUNIT_DASHBOARD_PORT="0", PYTHONUNBUFFERED="1")
    agent.env = dict(os.environ)
    agent.start()
    try:
        asyncio.run(agent.wait_for_line(" s after start", timeout=60))  # "online 1.2 s after start"
        listed = root.run("/usr/bin/headunit", "contacts", "/etc/headunit/profile.toml", user="headunit",
                          STATE_DIRECTORY="/var/lib/headunit")
        assert listed.returncode == 0
        page = (root / "var/lib/headunit/dashboard.url").read_text().strip().partition("#")[0]
        with urllib.request.urlopen(page, timeout=10) as response:  # the static files came in the wheel
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        assert agent.stop(timeout=30) == 0, agent.tail()
    database = root / "var/lib/headunit/messages.db"
    assert database.exists(), sorted(p.name for p in (root / "var/lib/headunit").iterdir())
    uid, _ = root.ids("headunit").split(":")
    assert database.stat().st_uid == int(uid)


def groups_of(root: Root, user: str) -> set[str]:
    """The supplementary groups the root's etc/group gives ``user``."""
    lines = (root / "etc/group").read_text().splitlines()
    return {f[0] for f in (line.split(":") for line in lines) if user in f[3].split(",")}


def assert_locked(folder: Path, gid: int) -> None:
    """Everything in /etc/headunit: root:headunit, files 0640, folders 0750, nothing for others."""
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (0, gid), f"{path}: owner {info.st_uid}:{info.st_gid}"
        assert stat.S_IMODE(info.st_mode) == (0o750 if path.is_dir() else 0o640), f"{path}: {oct(info.st_mode)}"


@pytest.mark.xdist_group("install-deb")
def test_the_package_installs_runs_and_purges_in_a_clean_bookworm(
        root: Root, deb: Path, prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    jid, password = xmpp_account("car")
    shutil.copyfile(deb, root / "tmp/headunit.deb")

    installed = root.run("dpkg", "-i", "/tmp/headunit.deb")
    assert "created the system user headunit" in installed.stdout
    assert "no profile yet" in installed.stdout
    user = root.entry("passwd", "headunit")
    assert user and user[5] == "/var/lib/headunit" and user[6] == "/usr/sbin/nologin"
    group = root.entry("group", "headunit")
    assert group is not None
    assert groups_of(root, "headunit") == {"dialout", "video", "audio", "gpio"}, "gpio: made, as the unit needs it"
    kiosk = root.entry("passwd", "headunit-kiosk")
    assert kiosk and kiosk[6] == "/usr/sbin/nologin" and groups_of(root, "headunit-kiosk") == {"video", "audio"}
    state = (root / "var/lib/headunit").stat()
    assert stat.S_IMODE(state.st_mode) == 0o700 and f"{state.st_uid}:{state.st_gid}" == root.ids("headunit")
    assert root.run("/usr/bin/headunit", "--version").stdout.strip() == f"headunit {__version__}"
    compiled = root / "opt/headunit/venv/lib/python3.11/site-packages/agent/__pycache__"
    assert any(compiled.glob("app.*.pyc")), "the unit forbids writing bytecode: it must be compiled at install"
    assert not (root / WANTS).is_symlink(), "enabled with no profile: it could only fail"

    source = root.car_source(password, prosody_server.ca_file)
    profile = root.run("headunit-install-profile", source)
    assert "OK (Demo car" in profile.stdout and "systemd is not running here" in profile.stdout, profile.stdout
    assert_locked(root / "etc/headunit", int(group[2]))
    assert (root / "etc/headunit/car.password").read_text().strip() == password

    installed_profile_runs(root, prosody_server, jid)

    again = root.run("dpkg", "-i", "/tmp/headunit.deb")  # reinstalling: the upgrade path
    assert "created the system user" not in again.stdout and "no profile yet" not in again.stdout
    assert (root / "var/lib/headunit/messages.db").exists()
    assert root.run("/usr/bin/headunit", "check", "/etc/headunit/profile.toml", user="headunit").returncode == 0

    removed = root.run("dpkg", "--remove", "headunit")
    assert "warning" not in removed.stdout + removed.stderr, removed.stdout + removed.stderr
    assert not (root / "opt/headunit").exists(), "the venv postinst made must go with the package"
    assert not (root / "usr/bin/headunit").is_symlink()
    assert (root / "etc/headunit/profile.toml").exists() and (root / "var/lib/headunit/messages.db").exists()
    assert root.entry("passwd", "headunit") is not None

    purged = root.run("dpkg", "--purge", "headunit")
    assert "purged" in purged.stdout
    for gone in ("etc/headunit", "var/lib/headunit", "opt/headunit", "lib/systemd/system/headunit.service"):
        assert not (root / gone).exists(), gone
    for name in ("headunit", "headunit-kiosk"):
        assert root.entry("passwd", name) is None and root.entry("group", name) is None, name
    status = root.run("dpkg-query", "-W", "-f=${db:Status-Status}", "headunit", ok=False)
    assert status.stdout in ("", "not-installed")


@pytest.mark.xdist_group("install-car-deb")
def test_a_package_with_the_profile_is_enabled_at_once(root: Root, car_deb: Path) -> None:
    shutil.copyfile(car_deb, root / "tmp/car.deb")
    installed = root.run("dpkg", "-i", "/tmp/car.deb")
    assert "no profile yet" not in installed.stdout
    assert "OK (Demo car" in installed.stdout, installed.stdout
    assert os.readlink(root / WANTS) == "/lib/systemd/system/headunit.service"
    assert not (root / KIOSK_WANTS).is_symlink(), "no cage and chromium here: the kiosk could only fail"
    group = root.entry("group", "headunit")
    assert group is not None
    assert_locked(root / "etc/headunit", int(group[2]))
    assert (root / "etc/headunit/car.password").read_text().strip() == "p4ss-in-the-package"

    root.run("dpkg", "--purge", "headunit")
    assert not (root / WANTS).is_symlink() and not (root / "etc/headunit").exists()


# --- install.sh / uninstall.sh ---------------------------------------------------------

def tree_listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_uid, p.lstat().st_gid)
            for p in folder.rglob("*") if "/venv/" not in str(p)}


def test_install_sh_makes_the_user_and_locked_config_and_uninstall_reverses_it(
        root: Root, wheelhouse: Path, prosody_server: ServerInfo) -> None:
    shutil.copytree(REPO / "packaging", root / "tmp/src/packaging")
    shutil.copytree(REPO / "systemd", root / "tmp/src/systemd")
    shutil.copytree(wheelhouse, root / "tmp/wheelhouse")
    source = root.car_source("install-sh-password", prosody_server.ca_file)
    root.run("groupadd", "--system", "gpio")  # as on Raspberry Pi OS

    first = root.run("sh", "/tmp/src/packaging/install.sh", source, "/tmp/wheelhouse")
    assert "systemd is not running here" in first.stdout
    assert "OK (Demo car" in first.stdout, first.stdout
    assert groups_of(root, "headunit") == {"dialout", "video", "audio", "gpio"}
    assert groups_of(root, "headunit-kiosk") == {"video", "audio"}
    group = root.entry("group", "headunit")
    assert group is not None
    assert_locked(root / "etc/headunit", int(group[2]))
    assert (root / "etc/systemd/system/headunit.service").read_bytes() == (REPO / "systemd/headunit.service").read_bytes()
    for rule in POLKIT_RULES:
        assert (root / f"etc/polkit-1/rules.d/{rule.name}").read_bytes() == rule.read_bytes()
    assert (root / "etc/udev/rules.d/60-headunit-gpio.rules").exists()
    assert os.readlink(root / "usr/local/bin/headunit") == "/opt/headunit/venv/bin/headunit"
    state = (root / "var/lib/headunit").stat()
    assert stat.S_IMODE(state.st_mode) == 0o700 and f"{state.st_uid}:{state.st_gid}" == root.ids("headunit")

    before = tree_listing(root / "etc")
    second = root.run("sh", "/tmp/src/packaging/install.sh", source, "/tmp/wheelhouse")
    assert "created the system user" not in second.stdout
    assert tree_listing(root / "etc") == before, "a second install changed /etc"
    assert not (root / "etc/headunit/profile.toml.old").exists()

    kept = root.run("sh", "/tmp/src/packaging/uninstall.sh")
    assert "PURGE=1" in kept.stdout
    for gone in ("opt/headunit", "etc/systemd/system/headunit.service", "etc/udev/rules.d/60-headunit-gpio.rules",
                 *(f"etc/polkit-1/rules.d/{rule.name}" for rule in POLKIT_RULES)):
        assert not (root / gone).exists(), gone
    assert not (root / "usr/local/bin/headunit").is_symlink()
    assert (root / "etc/headunit/car.password").exists() and (root / "var/lib/headunit").is_dir()
    assert root.entry("passwd", "headunit") is not None

    root.run("sh", "/tmp/src/packaging/uninstall.sh", PURGE="1")
    assert not (root / "etc/headunit").exists() and not (root / "var/lib/headunit").exists()
    for name in ("headunit", "headunit-kiosk"):
        assert root.entry("passwd", name) is None and root.entry("group", name) is None, name
    assert root.entry("group", "gpio") is not None, "the group gpio may serve others: it stays"


def test_make_install_into_a_destdir_and_make_uninstall(tmp_path: Path, prosody_server: ServerInfo) -> None:
    refused = make("install", ok=False)
    assert refused.returncode != 0 and "PROFILE=" in refused.stdout + refused.stderr

    profile = car_profile_folder(tmp_path / "clone", "destdir-password", prosody_server.ca_file)
    dest = tmp_path / "dest"
    make("install", f"PROFILE={profile}", f"DESTDIR={dest}")
    headunit = dest / "opt/headunit/venv/bin/headunit"
    checked = run([str(headunit), "check", str(dest / "etc/headunit/profile.toml")])
    assert "OK (Demo car" in checked.stdout
    assert (dest / "etc/headunit/car.password").read_text().strip() == "destdir-password"
    assert (dest / "etc/systemd/system/headunit.service").exists()
    for path in (dest / "etc/headunit").rglob("*"):
        assert path.lstat().st_mode & 0o007 == 0, f"{path} is world-readable"

    make("uninstall", f"DESTDIR={dest}")
    assert not (dest / "opt/headunit").exists() and not (dest / "etc/systemd/system/headunit.service").exists()
    assert (dest / "etc/headunit/profile.toml").exists()
    make("uninstall", f"DESTDIR={dest}", "PURGE=1")
    assert not (dest / "etc/headunit").exists() and not (dest / "var/lib/headunit").exists()
