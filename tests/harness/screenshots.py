"""The dashboard's screens as PNGs, for the README: ``python -m tests.harness.screenshots --out docs/screenshots``.

What ``make screenshots`` runs. A throw-away CA and Prosody, four accounts (the car, two
fleet operators, a stranger), the demo car in this process replaying its drive, and
Debian's Chromium at 800×480: every screen in the day and the night theme, taken when it
shows what it is for (the Drive screen on the expressway, the chat's quick replies while
driving, a confirmation once the car is parked). Each file is named ``<screen>-<theme>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import secrets
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slixmpp
from playwright.async_api import Page, expect
from slixmpp.plugins.xep_0004 import Form

from agent.app import Agent
from agent.profile.model import FleetConfig, Profile
from agent.vehicle import paths
from agent.telemetry.publisher import node_name
from tests.harness.agentproc import demo_profile, wait_until
from tests.harness.browser import chromium
from devserver.clients import close_client, log_in, verified_client
from devserver.fleet import FleetReceiver
from devserver.pki import make_pki
from devserver.prosody import Prosody, ServerInfo

SPEED = 8.0  # the 353 s drive in about 45 s: the expressway lasts 11 s
THEMES = ("day", "night")
WAIT = 60.0  # generous: only there so a stuck step cannot hang the script


# -- the other side: operators' and strangers' ordinary XMPP clients --------------------------


class OperatorClient:
    """A fleet operator on a stock slixmpp client: chat (with receipts) and ad-hoc commands."""

    def __init__(self, jid: str, password: str, server: ServerInfo, car: str) -> None:
        self.server = server
        self.car = car  # the car's full JID (commands go to the agent's resource)
        self.client = verified_client(jid, password, server, resource="desk",
                                      plugins=["xep_0030", "xep_0004", "xep_0050", "xep_0184"])
        self.chat: asyncio.Queue[str] = asyncio.Queue()
        self.client.add_event_handler("message", self._on_message)

    def _on_message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.chat.put_nowait(str(msg["body"]))

    async def start(self, *, subscribe: bool = True, show: str | None = None, status: str | None = None) -> None:
        """Log in, be available (or ``show``), and ask for the car's presence."""
        await log_in(self.client, self.server, presence=False)
        self.client.send_presence(pshow=show, pstatus=status)
        if subscribe:
            self.client.send_presence_subscription(pto=self.car.split("/")[0], ptype="subscribe")

    def say(self, body: str) -> None:
        """A chat message to the car, asking for a delivery receipt."""
        message = self.client.make_message(mto=self.car.split("/")[0], mbody=body, mtype="chat")
        message["request_receipt"] = True
        message.send()

    async def next_chat(self, timeout: float = WAIT) -> str:
        async with asyncio.timeout(timeout):
            return await self.chat.get()

    async def run(self, node: str, **values: str) -> Any:
        """Run command ``node``; submit ``values`` into each form it answers with (and confirm it)."""
        adhoc = self.client.plugin["xep_0050"]
        async with asyncio.timeout(WAIT):
            reply = await adhoc.send_command(self.car, node)
            while reply["command"]["status"] == "executing":
                form = Form()
                form["type"] = "submit"
                for var, value in {**values, "confirm": "true"}.items():
                    form.add_field(var=var, value=value)
                reply = await adhoc.send_command(self.car, node, action="complete",
                                                 sessionid=reply["command"]["sessionid"], payload=form)
            return reply

    async def stop(self) -> None:
        await close_client(self.client)


async def stranger_asks(jid: str, password: str, server: ServerInfo, car: str, nick: str,
                        status: str | None = None) -> slixmpp.ClientXMPP:
    """Someone not in the fleet asks to see the car's presence, with a nick (XEP-0172) and a note."""
    client = verified_client(jid, password, server, resource="phone")
    await log_in(client, server)
    await client.get_roster(timeout=WAIT)  # an "interested resource": the server tells it of the answer
    presence = client.make_presence(pto=car, ptype="subscribe", pstatus=status)
    element = ET.Element("{http://jabber.org/protocol/nick}nick")
    element.text = nick
    presence.xml.append(element)
    presence.send()
    return client


# -- the page ----------------------------------------------------------------------------------


async def set_theme(page: Page, theme: str) -> None:
    """Day or night, with the page's own toggle (clicked from script: overlays may cover it)."""
    if await page.evaluate("document.body.dataset.theme") != theme:
        await page.evaluate("document.querySelector('[data-testid=theme-toggle]').click()")
    await expect(page.locator("body")).to_have_attribute("data-theme", theme)


async def open_screen(page: Page, name: str) -> None:
    """Tap a tab of the rail (from script when an overlay covers it)."""
    await page.evaluate(f"document.querySelector('[data-testid=tab-{name}]').click()")
    await expect(page.locator("body")).to_have_attribute("data-screen", name)


class Camera:
    """Takes one screen in both themes and remembers what it wrote."""

    def __init__(self, page: Page, out: Path) -> None:
        self.page = page
        self.out = out
        self.written: list[Path] = []

    async def shoot(self, name: str) -> None:
        for theme in THEMES:
            await set_theme(self.page, theme)
            await self.page.wait_for_timeout(150)  # let the meters' short transition end
            path = self.out / f"{name}-{theme}.png"
            await self.page.screenshot(path=str(path))
            self.written.append(path)
            print(f"wrote {path}", flush=True)


# -- the scene ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Cast:
    agent: Agent
    operator: OperatorClient
    dispatch: OperatorClient
    stranger: slixmpp.ClientXMPP


def scene_profile(server: ServerInfo, car: tuple[str, str], operators: tuple[str, ...]) -> Profile:
    """The demo profile on this server, with these operators and the dashboard on a free port."""
    profile = demo_profile(server, *car)
    return dataclasses.replace(profile, fleet=FleetConfig(operators),
                               dashboard=dataclasses.replace(profile.dashboard, port=0))


async def until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    try:
        await wait_until(predicate, timeout)
    except TimeoutError:
        raise RuntimeError(f"screenshots: gave up waiting for {what}") from None


async def while_driving(cast: Cast, page: Page, camera: Camera) -> None:
    """Drive screen on the expressway, an operator's message over it, the chat's quick replies."""
    state = cast.agent.state

    def on_the_expressway() -> bool:
        speed = state.value(paths.SPEED)
        return state.value(paths.MODE) == "driving" and isinstance(speed, (int, float)) and speed > 100

    await until(on_the_expressway, "the expressway")
    await open_screen(page, "drive")
    await camera.shoot("drive")
    sent = await cast.operator.run("message-driver", text="Road works after Pangyo IC: take exit 2 and "
                                   "call the depot when you arrive.", ack="true")
    assert sent["command"]["status"] == "completed", sent
    await page.wait_for_selector("[data-testid=notice-overlay]:not([hidden])")
    await camera.shoot("notice")
    await page.click("[data-testid=notice-ack]")
    await page.wait_for_selector("[data-testid=notice-overlay]", state="hidden")
    await open_screen(page, "chat")
    await page.click(f"[data-testid=thread-row][data-peer='{cast.operator.client.boundjid.bare}']")
    await page.wait_for_selector("[data-testid=quick-reply]")
    await camera.shoot("chat-driving")


async def offers(cast: Cast, page: Page, camera: Camera) -> None:
    """An incoming video call and an incoming file, as the call and file features will raise them."""
    peer = cast.operator.client.boundjid.bare
    call = cast.agent.offers.offer_call(peer, ["audio", "video"])
    await page.wait_for_selector("[data-testid=call-overlay]:not([hidden])")
    await camera.shoot("call")
    cast.agent.offers.withdraw(call)
    file = cast.agent.offers.offer_file(peer, "delivery-note-0418.pdf", 284_311)
    await page.wait_for_selector("[data-testid=file-overlay]:not([hidden])")
    await camera.shoot("file")
    cast.agent.offers.withdraw(file)
    await page.wait_for_selector("[data-testid=file-overlay]", state="hidden")


async def parked(cast: Cast, page: Page, camera: Camera) -> None:
    """Once the car is switched off: contacts, the chat, presence, and a command confirmation."""
    await until(lambda: cast.agent.state.value(paths.MODE) == "off", "the end of the drive")
    await open_screen(page, "contacts")
    await page.wait_for_selector("[data-testid=pending-row]")
    await camera.shoot("contacts")
    await open_screen(page, "chat")
    await page.wait_for_selector("[data-testid=chat-input]:enabled")
    await camera.shoot("chat")
    await open_screen(page, "presence")
    await page.click("[data-testid=presence-dnd]")
    await page.wait_for_selector("[data-testid=presence-dnd][aria-pressed=true]")
    await camera.shoot("presence")
    await page.click("[data-testid=presence-auto]")
    await open_screen(page, "drive")
    unlock = asyncio.create_task(cast.operator.run("unlock"))
    await page.wait_for_selector("[data-testid=question-overlay]:not([hidden])", timeout=WAIT * 1000)
    await page.wait_for_timeout(1500)  # the countdown has moved
    await camera.shoot("question")
    await page.click("[data-testid=question-accept]")
    await unlock


async def conversation(cast: Cast) -> None:
    """A short chat before the drive, with the car's answer (delivered to the operator)."""
    cast.operator.say("Morning! Can you take the parcel from Pangyo to the Jeongja depot today?")
    await until(lambda: cast.agent.chat.is_caught_up, "the car's chat")
    await asyncio.sleep(0.5)
    await cast.agent.chat.send(cast.operator.client.boundjid.bare, "Yes, leaving in five minutes.")
    await cast.operator.next_chat()
    cast.operator.say("Great, thanks. Gate code at the depot is 4711.")


async def provision(prosody: Prosody, profile: Profile, fleet: str, password: str) -> None:
    """As the fleet's admin, create the car's telemetry node (as ``make run`` does), so samples leave."""
    node = node_name(profile.telemetry.node, profile.account.jid)
    receiver = FleetReceiver(fleet, password, prosody.server_info(), prosody.pubsub_host, node)
    await receiver.connect()
    try:
        await receiver.provision(profile.account.jid)
    finally:
        await receiver.stop()


async def take_all(out: Path, speed: float, size: tuple[int, int] = (800, 480)) -> list[Path]:
    """Run the whole scene in a throw-away server and folder; the PNGs go to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hu-shots-") as tmp:
        with Prosody(Path(tmp) / "prosody", pki=make_pki(Path(tmp) / "pki")) as prosody:
            server = prosody.server_info()
            accounts = {name: secrets.token_urlsafe(12) for name in ("car", "operator", "dispatch", "minji", "fleet")}
            jids = {name: prosody.register(name, password) for name, password in accounts.items()}
            profile = scene_profile(server, (jids["car"], accounts["car"]), (jids["operator"], jids["dispatch"]))
            await provision(prosody, profile, jids["fleet"], accounts["fleet"])
            return await _film(profile, server, jids, accounts, out, speed, size)


async def _film(profile: Profile, server: ServerInfo, jids: dict[str, str], passwords: dict[str, str],
                out: Path, speed: float, size: tuple[int, int]) -> list[Path]:
    car = f"{jids['car']}/{profile.account.resource}"
    agent = Agent(profile, speed=speed)
    operator = OperatorClient(jids["operator"], passwords["operator"], server, car)
    dispatch = OperatorClient(jids["dispatch"], passwords["dispatch"], server, car)
    stranger: slixmpp.ClientXMPP | None = None
    try:
        await agent.start()
        await agent.xmpp.wait_online(30)
        await operator.start()
        await dispatch.start(show="away", status="At the depot until 18:00")
        stranger = await stranger_asks(jids["minji"], passwords["minji"], server, jids["car"], "Minji Park",
                                       "Hi, it's Minji from the Jeongja depot")
        cast = Cast(agent, operator, dispatch, stranger)
        assert agent.dashboard is not None, "the demo profile has a dashboard"
        async with chromium(*size) as tab:
            await tab.page.goto(agent.dashboard.url)
            await expect(tab.page.locator("body")).to_have_attribute("data-link", "open")
            camera = Camera(tab.page, out)
            await conversation(cast)
            await while_driving(cast, tab.page, camera)
            await offers(cast, tab.page, camera)
            await parked(cast, tab.page, camera)
            if tab.errors:
                print("the page reported errors:\n  " + "\n  ".join(tab.errors), file=sys.stderr)
            return camera.written
    finally:
        for client in (operator, dispatch):
            await client.stop()
        if stranger is not None:
            await close_client(stranger)
        await asyncio.wait_for(agent.stop(), 20)


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1280x720, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="folder for the PNGs")
    parser.add_argument("--speed", type=float, default=SPEED, help="replay speed of the demo drive")
    parser.add_argument("--size", type=_size, default=(800, 480), help="viewport, WIDTHxHEIGHT (800x480)")
    parser.add_argument("-v", "--verbose", action="store_true", help="the agent's log on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    written = asyncio.run(take_all(args.out, args.speed, args.size))
    print(f"{len(written)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
