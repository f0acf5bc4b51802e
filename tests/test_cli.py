"""The ``headunit`` command line itself: sub-commands, -v anywhere, usage errors before asking the agent.

No agent runs here: the control-socket commands point at a socket nobody listens on, so a
request that passes the command line's checks ends with exit 3 (no agent), and one that
does not ends with exit 2 before anything is asked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.cli
from agent.cli import main
from tests.harness.agentproc import REPO
from tests.harness.cli import control_profile, headunit

# In the order of `headunit --help`.
SUBCOMMANDS = ("run", "check", "contacts", "audit", "driver", "dashboard", "state", "chat", "presence",
               "offers", "status")
DEMO = str(REPO / "profiles" / "demo.toml")


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    """What ``check profiles/demo.toml`` needs without `make run`'s password and CA files."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read by check\n")
    return {"HEADUNIT_PASSWORD": "x", "HEADUNIT_CA_FILE": str(ca)}


@pytest.fixture
def car(tmp_path: Path) -> str:
    """A profile whose control socket nobody listens on."""
    return str(control_profile(tmp_path, tmp_path / "control.sock"))


def test_the_top_level_help_lists_every_subcommand_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: headunit [-h] [--version] [-v] COMMAND ...\n")
    places = [out.index(f"\n    {name} ") for name in SUBCOMMANDS]
    assert places == sorted(places), "sub-commands out of order"
    assert "examples:\n  headunit check profiles/demo.toml" in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_that_lists_verbose(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: headunit {command} [-h] [-v]")
    assert "-v, --verbose more logging (-v: debug for headunit, -vv: also the XMPP library)" in " ".join(out.split())


@pytest.mark.parametrize("argv, verbose", [
    (["check", DEMO], 0),
    (["-v", "check", DEMO], 1),
    (["check", DEMO, "-v"], 1),
    (["check", DEMO, "-vv"], 2),
    (["check", "--verbose", DEMO], 1),
    (["-v", "check", DEMO, "-vv"], 3),
])
def test_verbose_counts_before_and_after_the_subcommand_add_up(
        argv: list[str], verbose: int, demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in demo_env.items():
        monkeypatch.setenv(name, value)
    seen: list[int] = []
    monkeypatch.setattr(agent.cli, "setup_logging", seen.append)
    assert main(argv) == 0
    assert seen == [verbose]
    assert capsys.readouterr().out == f"{DEMO}: OK (Demo car (simulated drive), account car@localhost)\n"


@pytest.mark.parametrize("where", ["before", "after"])
async def test_check_runs_as_its_own_process_with_verbose_either_side(where: str, demo_env: dict[str, str]) -> None:
    args = ["-v", "check", "profiles/demo.toml"] if where == "before" else ["check", "profiles/demo.toml", "-v"]
    rc, out, err = await headunit(*args, env=demo_env)
    assert (rc, out, err) == (0, "profiles/demo.toml: OK (Demo car (simulated drive), account car@localhost)\n", "")


async def test_a_refused_profile_is_exit_2(tmp_path: Path) -> None:
    rc, out, err = await headunit("check", str(tmp_path / "missing.toml"), "-v")
    assert (rc, out) == (2, "")
    missing = tmp_path / "missing.toml"
    assert err == f"headunit: profile refused: {missing}: expected an existing profile file (no such file)\n"


@pytest.mark.parametrize("argv, error", [
    (["chat", "{car}", "send", "bob", "hello"],
     "headunit chat: JID: expected a person's JID like ann@example.org, found 'bob'\n"),
    (["chat", "{car}", "send", "ann@example.org", "x" * 10_001],
     "headunit chat: TEXT: a message is at most 10000 bytes, this one has 10001\n"),
    (["chat", "{car}", "show", "ann@example.org", "-n", "501"],
     "headunit chat: -n: expected a number from 1 to 500, found 501\n"),
    (["chat", "{car}", "-n", "201"], "headunit chat: -n: expected a number from 1 to 200, found 201\n"),
    (["offers", "{car}", "accept", "XYZ"], "headunit offers: ID: expected an id like 3fa9c2, found 'XYZ'\n"),
    (["offers", "{car}", "decline"], "headunit offers: decline needs an ID (from `headunit offers PROFILE`)\n"),
    (["presence", "{car}", "dnd", "--status", "x" * 101, "-v"],
     "headunit presence: --status: expected a text of at most 100 characters, found "
     "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\n"),
    (["contacts", "{car}", "approve"], "headunit contacts: approve needs a JID\n"),
    (["driver", "{car}", "ack", "1", "--recent"],
     "headunit driver: --recent lists messages; it does not go with ack\n"),
    (["dashboard", "{car}", "--wait", "-1"], "headunit dashboard: --wait takes 0 to 3600 seconds\n"),
])
def test_usage_errors_are_exit_2_before_asking_the_agent(
        argv: list[str], error: str, car: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([arg.format(car=car) for arg in argv]) == 2
    assert capsys.readouterr() == ("", error)


@pytest.mark.parametrize("argv", [
    ["offers", "{car}", "accept", " 3FA9C2 "],  # the id's case and spaces do not matter
    ["chat", "{car}", "send", "Ann@Example.org", "hello"],
    ["presence", "{car}", "dnd", "--status", "Lunch"],
    ["state", "{car}", "-v"],
])
def test_good_arguments_reach_the_agent_and_no_agent_is_exit_3(
        argv: list[str], car: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([arg.format(car=car) for arg in argv]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("headunit: ") and str(tmp_path / "control.sock") in err


async def test_a_usage_error_as_its_own_process(car: str) -> None:
    rc, out, err = await headunit("chat", car, "send", "bob", "hello", "-v")
    assert (rc, out, err) == (2, "", "headunit chat: JID: expected a person's JID like ann@example.org, found 'bob'\n")
    rc, out, err = await headunit("offers", car, "accept", "XYZ")
    assert (rc, out, err) == (2, "", "headunit offers: ID: expected an id like 3fa9c2, found 'XYZ'\n")


async def test_an_unknown_option_after_the_subcommand_is_still_refused(car: str) -> None:
    rc, out, err = await headunit("state", car, "-x")
    assert (rc, out) == (2, "")
    assert err.endswith("headunit: error: unrecognized arguments: -x\n")
