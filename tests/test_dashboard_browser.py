"""The dashboard in a real browser: Debian's Chromium (Playwright) on the page the agent serves.

The agent runs in this process on the demo profile (dashboard on a free port, fleet
operators registered on the session's Prosody), with or without its recorded drive; the
other side is ordinary slixmpp clients. Each test does what a driver does on the
touchscreen and checks what reached the car, the operator or the stranger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import can
import pytest
import slixmpp
from playwright.async_api import Locator, Page, WebSocketRoute, expect

from agent.app import Agent
from agent.profile.model import FleetConfig, Profile, SessionConfig
from agent.vehicle import paths
from tests.harness.dashboard import running as started
from tests.harness.agentproc import demo_profile, wait_until
from tests.harness.browser import VIEWPORTS, Tab, chromium
from devserver.clients import Watcher, close_client
from devserver.prosody import AccountFactory, ServerInfo
from tests.harness.screenshots import OperatorClient, stranger_asks
from tests.harness.tcpproxy import TcpProxy

WAIT = 30.0  # generous: only there so a broken part cannot hang a test
SPEED = 20.0  # the 353 s drive in about 18 s; it drives for about 14 s of them
UNLOCK = (0x2F0, bytes([2, 0, 0, 0, 0, 0, 0, 0]))

expect.set_options(timeout=WAIT * 1000)


# -- the car, the people, the page ---------------------------------------------------------------


def car_profile(server: ServerInfo, car: tuple[str, str], operators: tuple[str, ...], *,
                drive: bool) -> Profile:
    """The demo car on this server; without ``drive`` it has no CAN or GNSS replay (parked for good)."""
    profile = demo_profile(server, *car)
    profile = dataclasses.replace(profile, fleet=FleetConfig(operators),
                                  dashboard=dataclasses.replace(profile.dashboard, port=0))
    if not drive:
        profile = dataclasses.replace(profile, vehicle=dataclasses.replace(profile.vehicle, can=None, gnss=None))
    return profile


def running(profile: Profile, *, speed: float = SPEED) -> contextlib.AbstractAsyncContextManager[Agent]:
    """An agent started and online on ``profile`` (the drive at this module's speed by default)."""
    return started(profile, speed=speed)


@contextlib.asynccontextmanager
async def operator_of(jid: str, password: str, server: ServerInfo, car: Agent) -> AsyncIterator[OperatorClient]:
    """An operator logged in and subscribed to the car (operators are approved at once)."""
    operator = OperatorClient(jid, password, server, f"{car.profile.account.jid}/{car.profile.account.resource}")
    try:
        await operator.start()
        await wait_until(lambda: any(c.jid == jid for c in car.contacts.contacts()), WAIT)
        yield operator
    finally:
        await operator.stop()


@contextlib.asynccontextmanager
async def dashboard(agent: Agent, size: tuple[int, int] = VIEWPORTS["small"]) -> AsyncIterator[Page]:
    """The agent's page, greeted (hello and the full state shown); it must not report errors."""
    assert agent.dashboard is not None
    async with chromium(*size) as tab:
        await tab.page.goto(agent.dashboard.url)
        await expect(tab.page.get_by_test_id("car-name")).to_have_text(agent.profile.name)
        await expect(tab.page.locator("body")).to_have_attribute("data-link", "open")
        yield tab.page
        assert_clean(tab)


def assert_clean(tab: Tab) -> None:
    assert tab.errors == [], "the page reported errors"


async def open_tab(page: Page, name: str) -> None:
    await page.get_by_test_id(f"tab-{name}").click()
    await expect(page.get_by_test_id(f"screen-{name}")).to_be_visible()


def row(page: Page, testid: str, attribute: str, value: str) -> Locator:
    return page.locator(f"[data-testid={testid}][data-{attribute}='{value}']")


async def speed_shown(page: Page) -> int | None:
    text = (await page.get_by_test_id("drive-speed").text_content() or "").strip()
    return int(text) if text.isdigit() else None


# -- the Drive screen and driving ---------------------------------------------------------------


@pytest.mark.slow
async def test_the_drive_screen_follows_the_drive_and_only_quick_replies_go_out_while_moving(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the replayed drive under the page; an operator's message, answered while driving.
    Kept: the speed shown moves through several values, gear D and "Driving", then P and
    "Switched off"; while moving the text field is off and a quick reply reaches the operator."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, (op,), drive=True)) as agent, \
            operator_of(op, op_pw, prosody_server, agent) as operator, dashboard(agent) as page:
        operator.say("Are you on your way?")
        await expect(page.get_by_test_id("drive-mode")).to_have_text("Driving")
        await expect(page.locator("[data-testid=drive-gear] .gear.active")).to_have_text(re.compile(r"^D\d$"))
        seen: set[int] = set()
        async with asyncio.timeout(WAIT):
            while len({s for s in seen if s > 0}) < 3:
                if (shown := await speed_shown(page)) is not None:
                    seen.add(shown)
                await asyncio.sleep(0.05)

        await open_tab(page, "chat")
        await row(page, "thread-row", "peer", op).click()
        await expect(page.get_by_test_id("message-body").filter(has_text="Are you on your way?")).to_be_visible()
        assert agent.state.value(paths.MODE) == "driving", "the drive lasts long enough for this part"
        await expect(page.get_by_test_id("chat-input")).to_be_disabled()
        replies = page.get_by_test_id("quick-reply")
        await expect(replies).to_have_text(list(agent.profile.dashboard.quick_replies))
        await replies.filter(has_text="On my way").click()
        assert await operator.next_chat() == "On my way"
        await expect(page.locator("[data-testid=message][data-direction=out]").last).to_contain_text("On my way")

        await open_tab(page, "drive")
        await expect(page.get_by_test_id("drive-mode")).to_have_text("Switched off")
        await expect(page.locator("[data-testid=drive-gear] .gear.active")).to_have_text("P")


@pytest.mark.slow
async def test_a_command_confirmation_fills_the_screen_and_accept_lets_the_frame_out(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the operator runs the demo's "unlock" once the drive ended (car off). Kept: the
    question full screen with who asks and a countdown; Accept sends the frame, and the operator's
    command completes."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    bus = can.Bus(interface="virtual", channel="demo-actions", receive_own_messages=False)
    try:
        async with running(car_profile(prosody_server, car, (op,), drive=True), speed=40) as agent, \
                operator_of(op, op_pw, prosody_server, agent) as operator, dashboard(agent) as page:
            await wait_until(lambda: agent.state.value(paths.MODE) == "off"
                             and agent.state.get(paths.SPEED) is not None, WAIT * 2)
            unlock = asyncio.create_task(operator.run("unlock"))
            overlay = page.get_by_test_id("question-overlay")
            await expect(overlay).to_be_visible()
            await expect(page.get_by_test_id("question-text")).to_have_text("Unlock the doors?")
            await expect(page.get_by_test_id("question-requester")).to_have_text(op)
            await expect(page.get_by_test_id("question-countdown")).to_have_text(re.compile(r"^\d+ s to answer$"))
            assert await asyncio.to_thread(frames_on, bus) == [], "nothing is sent before the driver accepts"
            await page.get_by_test_id("question-accept").click()
            reply = await unlock
            await expect(overlay).to_be_hidden()
        assert reply["command"]["status"] == "completed"
        assert "1 frame(s) sent" in str(reply["command"]["notes"]), reply["command"]["notes"]
        assert await asyncio.to_thread(frames_on, bus) == [UNLOCK]
    finally:
        bus.shutdown()


def frames_on(bus: can.BusABC) -> list[tuple[int, bytes]]:
    seen = []
    while (msg := bus.recv(timeout=0.5)) is not None:
        seen.append((msg.arbitration_id, bytes(msg.data)))
    return seen


# -- a parked car: chat, contacts, notices, presence, offers ---------------------------------------


async def test_an_operators_message_shows_in_chat_and_the_typed_reply_reaches_them(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the operator writes; the driver opens the thread and types a reply (parked).
    Kept: the message in the thread, the reply at the operator, and its tick turning to delivered."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, (op,), drive=False)) as agent, \
            operator_of(op, op_pw, prosody_server, agent) as operator, dashboard(agent) as page:
        operator.say("Where are you parked? <b>bold</b>")
        await expect(page.get_by_test_id("badge-chat")).to_have_text("1")
        await open_tab(page, "chat")
        await row(page, "thread-row", "peer", op).click()
        incoming = page.locator("[data-testid=message][data-direction=in]")
        await expect(incoming).to_have_text([re.compile(r"Where are you parked\? <b>bold</b>")])
        assert await page.locator("[data-testid=message-list] b").count() == 0, "a message is text, not markup"

        await page.get_by_test_id("chat-input").fill("Level 2, bay 14")
        await page.get_by_test_id("chat-send").click()
        assert await operator.next_chat() == "Level 2, bay 14"
        mine = page.locator("[data-testid=message][data-direction=out]")
        await expect(mine).to_have_text([re.compile("Level 2, bay 14")])
        await expect(mine).to_have_attribute("data-state", "delivered")
        await expect(page.get_by_test_id("chat-input")).to_have_value("")


async def test_a_strangers_request_is_approved_on_the_contacts_screen(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: someone outside the fleet asks for the car's presence; the driver taps Approve.
    Kept: the request listed, then gone; the stranger subscribed (told by the server)."""
    car, (friend, friend_pw) = xmpp_account("car"), xmpp_account("friend")
    async with running(car_profile(prosody_server, car, (), drive=False)) as agent, dashboard(agent) as page:
        client = await stranger_asks(friend, friend_pw, prosody_server, agent.profile.account.jid, "Friend",
                                     "It's me, <i>Sam</i>")
        subscribed = asyncio.Event()
        client.add_event_handler("presence", lambda p: subscribed.set() if p["type"] == "subscribed" else None)
        try:
            await expect(page.get_by_test_id("badge-contacts")).to_have_text("1")
            await open_tab(page, "contacts")
            request = row(page, "pending-row", "jid", friend)
            await expect(request).to_contain_text("Friend")
            await expect(request).to_contain_text("It's me, <i>Sam</i>")
            assert subscribed.is_set() is False, "nothing is granted before the driver answers"
            await request.get_by_test_id("approve-button").click()
            await asyncio.wait_for(subscribed.wait(), WAIT)
            await expect(request).to_have_count(0)
            await expect(page.get_by_test_id("badge-contacts")).to_be_hidden()
            assert friend not in {r.jid for r in agent.contacts.pending()}
        finally:
            await close_client(client)


async def test_an_operators_message_pops_up_and_is_acknowledged_on_the_page(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: message-driver with an acknowledgement, from the operator's ad-hoc client; the driver
    taps Acknowledge. Kept: the pop-up over the screen, gone after; the operator told by chat."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, (op,), drive=False)) as agent, \
            operator_of(op, op_pw, prosody_server, agent) as operator, dashboard(agent) as page:
        sent = await operator.run("message-driver", text="Please call the depot", ack="true")
        assert "waiting for their acknowledgement" in str(sent["command"]["notes"])
        popup = page.get_by_test_id("notice-overlay")
        await expect(popup).to_be_visible()
        await expect(page.get_by_test_id("notice-text")).to_have_text("Please call the depot")
        await expect(page.get_by_test_id("notice-sender")).to_have_text(op)
        await expect(page.get_by_test_id("notice-ok")).to_be_hidden()
        await page.get_by_test_id("notice-ack").click()
        await expect(popup).to_be_hidden()
        body = await operator.next_chat()
        assert body.startswith("The driver acknowledged your message: “Please call the depot”"), body
        assert agent.prompts.pending().notices == ()


async def test_the_presence_override_reaches_a_watcher_and_auto_gives_the_cars_back(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: Do not disturb, then Automatic, on the Presence screen. Kept: the operator's client
    sees dnd, then the mode's own presence again; the screen says which one holds."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with running(car_profile(prosody_server, car, (op,), drive=False)) as agent, dashboard(agent) as page:
        watcher = Watcher(op, op_pw, prosody_server, agent.profile.account.jid)
        await watcher.start()
        try:
            auto_show = agent.presence.current().show or ""
            assert auto_show != "dnd", "the parked car's own presence is not dnd"
            await watcher.wait_for(lambda: watcher.shows()[-1:] == [auto_show], WAIT)
            await open_tab(page, "presence")
            await expect(page.get_by_test_id("presence-auto")).to_have_attribute("aria-pressed", "true")

            await page.get_by_test_id("presence-dnd").click()
            await watcher.wait_for(lambda: watcher.shows()[-1:] == ["dnd"], WAIT)
            await expect(page.get_by_test_id("presence-dnd")).to_have_attribute("aria-pressed", "true")
            await expect(page.get_by_test_id("presence-show")).to_have_text("Do not disturb")
            assert not agent.presence.is_automatic

            await page.get_by_test_id("presence-auto").click()
            await watcher.wait_for(lambda: watcher.shows()[-2:] == ["dnd", auto_show], WAIT)
            await expect(page.get_by_test_id("presence-auto")).to_have_attribute("aria-pressed", "true")
            assert agent.presence.is_automatic
        finally:
            await watcher.stop()


async def test_incoming_call_and_file_screens_decline_and_accept(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: a video call offer, declined; a file offer, accepted (raised as the call and file
    features will). Kept: each screen with who and what, and the offer's decision."""
    car = xmpp_account("car")
    async with running(car_profile(prosody_server, car, (), drive=False)) as agent, dashboard(agent) as page:
        call = agent.offers.offer_call("alice@example.org", ["audio", "video"])
        await expect(page.get_by_test_id("call-overlay")).to_be_visible()
        await expect(page.get_by_test_id("call-media")).to_have_text("Incoming video call")
        await expect(page.get_by_test_id("call-peer")).to_have_text("alice")
        await page.get_by_test_id("call-decline").click()
        assert await call.decision(WAIT) == "declined"
        await expect(page.get_by_test_id("call-overlay")).to_be_hidden()

        file = agent.offers.offer_file("bob@example.org", "<img src=x onerror=alert(1)>.pdf", 1_400_000)
        await expect(page.get_by_test_id("file-overlay")).to_be_visible()
        await expect(page.get_by_test_id("file-name")).to_have_text("<img src=x onerror=alert(1)>.pdf")
        await expect(page.get_by_test_id("file-size")).to_have_text("1.4 MB")
        await expect(page.get_by_test_id("file-peer")).to_have_text("bob@example.org")
        assert await page.locator("[data-testid=file-overlay] img").count() == 0, "a name is text, not markup"
        await page.get_by_test_id("file-accept").click()
        assert await file.decision(WAIT) == "accepted"
        await expect(page.get_by_test_id("file-overlay")).to_be_hidden()


# -- the link to the agent and to the server ----------------------------------------------------


async def test_the_profiles_theme_holds_the_toggle_switches_it_and_a_reload_keeps_both(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: a profile fixed on the night theme; the toggle; a reload of the page. Kept: night, then
    day; after the reload still day and connected again (the token kept by the tab, not the address bar)."""
    car = xmpp_account("car")
    profile = car_profile(prosody_server, car, (), drive=False)
    profile = dataclasses.replace(profile, dashboard=dataclasses.replace(profile.dashboard, theme="night"))
    async with running(profile) as agent, dashboard(agent) as page:
        body = page.locator("body")
        await expect(body).to_have_attribute("data-theme", "night")
        assert "token" not in page.url, "the token leaves the address bar once read"
        await page.get_by_test_id("theme-toggle").click()
        await expect(body).to_have_attribute("data-theme", "day")
        await page.reload()
        await expect(body).to_have_attribute("data-link", "open")
        await expect(page.get_by_test_id("car-name")).to_have_text(agent.profile.name)
        await expect(body).to_have_attribute("data-theme", "day")
        await page.get_by_test_id("theme-toggle").click()
        await expect(body).to_have_attribute("data-theme", "night")


async def test_without_the_token_the_page_says_it_is_not_authorised(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the page's address without its #token, then with a wrong one, then the right one in the
    same tab. Kept: "Not authorised" (no hello, nothing connected) until the right token is given."""
    car = xmpp_account("car")
    async with running(car_profile(prosody_server, car, (), drive=False)) as agent, chromium() as tab:
        assert agent.dashboard is not None
        await tab.page.goto(agent.dashboard.address)
        await expect(tab.page.get_by_test_id("not-authorised")).to_be_visible()
        assert tab.errors == [], "without a token the page does not even try"

        await tab.page.goto("about:blank")  # a fresh load, not a change of fragment in the same page
        await tab.page.goto(f"{agent.dashboard.address}#token=not-the-token")
        await expect(tab.page.get_by_test_id("not-authorised")).to_be_visible()
        await expect(tab.page.get_by_test_id("car-name")).to_have_text("headunit")  # no hello came
        assert agent.dashboard.clients == 0
        assert any("403" in e for e in tab.errors), f"the agent refused the wrong token: {tab.errors}"
        assert await tab.page.get_by_test_id("agent-unreachable").is_hidden(), "refused is final, not retried"

        await tab.page.goto(agent.dashboard.url)  # the right address, in the same tab: only the fragment changes
        await expect(tab.page.get_by_test_id("car-name")).to_have_text(agent.profile.name)
        await expect(tab.page.get_by_test_id("not-authorised")).to_be_hidden()
        assert agent.dashboard.clients == 1


async def test_with_the_server_out_of_reach_a_typed_reply_waits_and_goes_out_on_reconnect(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the car's link to the XMPP server cut (a proxy refusing), the driver answers meanwhile,
    then the link comes back. Kept: the page shows the car offline with one message to send, the
    reply queued (⏱); once back online the operator gets it."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    async with TcpProxy(prosody_server.host, prosody_server.port) as proxy:
        profile = car_profile(dataclasses.replace(prosody_server, port=proxy.port), car, (op,), drive=False)
        profile = dataclasses.replace(profile, session=SessionConfig(reconnect_initial=0.2, reconnect_cap=1.0))
        async with running(profile) as agent, operator_of(op, op_pw, prosody_server, agent) as operator, \
                dashboard(agent) as page:
            operator.say("Call me when you can")
            await open_tab(page, "chat")
            await row(page, "thread-row", "peer", op).click()
            await expect(page.locator("[data-testid=message][data-direction=in]")).to_have_count(1)

            proxy.refuse(True)
            await proxy.cut()
            await expect(page.get_by_test_id("connection-pill")).not_to_have_attribute("data-state", "online")
            await page.get_by_test_id("chat-input").fill("Will do at 5")
            await page.get_by_test_id("chat-send").click()
            mine = page.locator("[data-testid=message][data-direction=out]")
            await expect(mine).to_have_attribute("data-state", "queued")
            await expect(page.get_by_test_id("connection-outbox-text")).to_have_text("1 message to send")
            assert operator.chat.empty()

            proxy.refuse(False)
            assert await operator.next_chat() == "Will do at 5"
            await expect(page.get_by_test_id("connection-pill")).to_have_attribute("data-state", "online")
            await expect(mine).not_to_have_attribute("data-state", "queued")


async def test_when_the_agent_goes_away_the_page_says_so(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the dashboard server stops under a connected page. Kept: "Agent not reachable"
    with a retry; the last screen stays, dimmed."""
    car = xmpp_account("car")
    async with running(car_profile(prosody_server, car, (), drive=False)) as agent:
        assert agent.dashboard is not None
        async with chromium() as tab:
            await tab.page.goto(agent.dashboard.url)
            await expect(tab.page.locator("body")).to_have_attribute("data-link", "open")
            await agent.dashboard.stop()
            await expect(tab.page.get_by_test_id("agent-unreachable")).to_be_visible()
            await expect(tab.page.get_by_test_id("reconnect-note")).to_contain_text("Trying again")
            await expect(tab.page.get_by_test_id("screen-drive")).to_be_visible()


class Cable:
    """The page's WebSocket routed through Playwright to the real server, so a test can pull it out."""

    def __init__(self) -> None:
        self.is_plugged = True
        self.routes: list[WebSocketRoute] = []

    async def route(self, ws: WebSocketRoute) -> None:
        if not self.is_plugged:
            await ws.close(code=1011, reason="unplugged")
            return
        self.routes.append(ws)
        ws.connect_to_server()

    async def unplug(self) -> None:
        self.is_plugged = False
        for ws in self.routes:
            await ws.close(code=1011, reason="unplugged")
        self.routes.clear()


async def test_a_reply_typed_while_the_page_lost_the_agent_goes_out_once_it_is_back(
        prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: the page's connection to the agent drops; the driver answers meanwhile; it comes back.
    Kept: "Agent not reachable" while down, the reply kept on the page, then sent in order, and
    the operator gets it."""
    car, (op, op_pw) = xmpp_account("car"), xmpp_account("operator")
    cable = Cable()
    async with running(car_profile(prosody_server, car, (op,), drive=False)) as agent, \
            operator_of(op, op_pw, prosody_server, agent) as operator, chromium() as tab:
        assert agent.dashboard is not None
        page = tab.page
        await page.route_web_socket(re.compile(r"/ws\?token="), cable.route)
        await page.goto(agent.dashboard.url)
        operator.say("Are you coming back?")
        await open_tab(page, "chat")
        await row(page, "thread-row", "peer", op).click()
        await expect(page.locator("[data-testid=message][data-direction=in]")).to_have_count(1)

        await cable.unplug()
        await expect(page.get_by_test_id("agent-unreachable")).to_be_visible()
        for text in ("Yes", "in ten minutes"):
            await page.get_by_test_id("chat-input").fill(text)
            await page.get_by_test_id("chat-send").click()
        await expect(page.locator("[data-testid=message][data-state=local]")).to_have_count(2)
        assert operator.chat.empty()

        cable.is_plugged = True
        assert [await operator.next_chat(), await operator.next_chat()] == ["Yes", "in ten minutes"]
        await expect(page.get_by_test_id("agent-unreachable")).to_be_hidden()
        await expect(page.locator("[data-testid=message][data-state=local]")).to_have_count(0)
        await expect(page.locator("[data-testid=message][data-direction=out]")).to_have_count(2)
        assert_clean(tab)


# -- both touchscreens ------------------------------------------------------------------------------

CONTROLS = """() => {
  const within = (r) => r.left >= 0 && r.top >= 0 && r.right <= innerWidth + 0.5 && r.bottom <= innerHeight + 0.5;
  const overlay = [...document.querySelectorAll(".overlay")].find((el) => !el.hidden);
  const scope = overlay ?? document; // what an overlay covers cannot be touched: only its own controls count
  const shown = [...scope.querySelectorAll("button, input, .tab")].filter((el) => el.getClientRects().length
    && getComputedStyle(el).visibility !== "hidden");
  const boxes = shown.map((el) => ({ id: el.dataset.testid || el.className, r: el.getBoundingClientRect() }));
  const problems = [];
  for (const { id, r } of boxes) {
    if (!within(r)) problems.push(`${id} outside the screen`);
    if (r.height < 48) problems.push(`${id} only ${r.height}px tall`);
  }
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i].r, b = boxes[j].r;
    if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
      problems.push(`${boxes[i].id} overlaps ${boxes[j].id}`);
  }
  const clipped = [...document.querySelectorAll(".tile-value, .speed, .tab span, .bar-link, .choice span")]
    .filter((el) => el.getClientRects().length && el.scrollWidth > el.clientWidth + 1);
  for (const el of clipped) problems.push(`${el.dataset.testid || el.className} clipped`);
  if (document.documentElement.scrollWidth > innerWidth) problems.push("the page scrolls sideways");
  return { count: shown.length, problems };
}"""


async def controls_fit(page: Page) -> int:
    """Every visible control inside the viewport, at least 48 px tall, none on another; nothing clipped."""
    found: dict[str, Any] = await page.evaluate(CONTROLS)
    assert found["problems"] == []
    return int(found["count"])


@pytest.mark.parametrize("size", ["small", "large"])
async def test_every_screen_fits_the_touchscreen_with_big_enough_controls(
        size: str, prosody_server: ServerInfo, xmpp_account: AccountFactory) -> None:
    """Tried: each screen and the call screen at 800×480 and 1280×720, with a contact, a thread and
    a request waiting. Kept: the tab bar and every button inside the screen and >= 48 px tall,
    nothing overlapping or clipped, no sideways scrolling."""
    car, (op, op_pw), (friend, friend_pw) = xmpp_account("car"), xmpp_account("operator"), xmpp_account("friend")
    async with running(car_profile(prosody_server, car, (op,), drive=False)) as agent, \
            operator_of(op, op_pw, prosody_server, agent) as operator, \
            dashboard(agent, VIEWPORTS[size]) as page:
        stranger: slixmpp.ClientXMPP = await stranger_asks(friend, friend_pw, prosody_server,
                                                            agent.profile.account.jid, "Friend")
        try:
            operator.say("Hello from the depot, this is a rather long message to see it wrap on the screen")
            await expect(page.get_by_test_id("badge-chat")).to_be_visible()
            assert await controls_fit(page) >= 5  # the Drive screen: four tabs and the theme toggle
            await open_tab(page, "contacts")
            await expect(page.get_by_test_id("pending-row")).to_have_count(1)
            await controls_fit(page)
            await row(page, "contact-row", "jid", op).get_by_test_id("contact-chat").click()
            await expect(page.get_by_test_id("chat-send")).to_be_visible()
            await controls_fit(page)
            await open_tab(page, "presence")
            await controls_fit(page)
            call = agent.offers.offer_call(op, ["audio"])
            await expect(page.get_by_test_id("call-accept")).to_be_visible()
            assert await controls_fit(page) >= 2
            agent.offers.withdraw(call)
            await expect(page.get_by_test_id("call-overlay")).to_be_hidden()
        finally:
            await close_client(stranger)
