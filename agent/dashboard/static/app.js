// The dashboard page: holds what the agent said last, routes each message to the screen
// that shows it, and switches screens and themes. See docs/dashboard-protocol.md.

import { AgentLink } from "./socket.js";
import { byId, setText, show } from "./dom.js";
import * as chat from "./chat.js";
import * as contacts from "./contacts.js";
import * as drive from "./drive.js";
import * as overlays from "./overlays.js";
import * as presence from "./presence.js";

const TOKEN_KEY = "headunit.token";
const THEME_KEY = "headunit.theme";
const DAY_FROM = 7; // local hour the "auto" theme turns to day…
const NIGHT_FROM = 19; // …and back to night
const TOAST_MS = 5000;

const store = {
  hello: null,
  values: {},
  connection: null,
  presence: null,
  contacts: [],
  pending: [],
  prompts: { notices: [], questions: [] },
  offers: { calls: [], files: [] },
  chat: chat.createState(),
  overlays: overlays.createState(),
  screen: "drive",
  moving: false,
};

let link = null;

const ctx = {
  request: (type, fields) => (link ? link.request(type, fields) : Promise.resolve({ ok: false, error: "not connected" })),
  isLinkOpen: () => !!link && link.isOpen,
  isMoving,
  toast,
  openChat,
  loadOlder,
  renderChat: () => chat.render(store, ctx),
  sendChat: async (body) => {
    const ok = await chat.send(store, ctx, body);
    chat.render(store, ctx);
    return ok;
  },
};

// -- the token ------------------------------------------------------------------------------

/** The page's key: from #token=… (then out of the address bar), else from this tab's session. */
function readToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

// -- messages from the agent ------------------------------------------------------------

const HANDLERS = {
  hello(msg) {
    store.hello = msg;
    setText("car-name", msg.name || msg.car || "headunit");
    chat.renderQuickReplies(msg.quick_replies, ctx);
    applyTheme();
  },
  vehicle(msg) {
    const values = msg.values && typeof msg.values === "object" ? msg.values : {};
    store.values = msg.full ? { ...values } : { ...store.values, ...values };
    drive.render(store);
    renderBar();
    const moving = isMoving();
    if (moving !== store.moving) { // the chat changes only when moving starts or stops, not at every value
      store.moving = moving;
      chat.renderComposer(store, ctx);
    }
  },
  connection(msg) {
    store.connection = msg;
    drive.render(store);
    renderBar();
  },
  presence(msg) {
    store.presence = msg;
    presence.render(msg);
  },
  contacts(msg) {
    store.contacts = Array.isArray(msg.contacts) ? msg.contacts : [];
    store.pending = Array.isArray(msg.pending) ? msg.pending : [];
    contacts.render(store, ctx);
    chat.render(store, ctx);
  },
  messages(msg) {
    chat.take(store.chat, msg, (peer) => store.screen === "chat" && store.chat.selected === peer);
    chat.render(store, ctx);
  },
  prompts(msg) {
    store.prompts = { notices: msg.notices ?? [], questions: msg.questions ?? [] };
    overlays.prune(store);
    overlays.render(store);
  },
  offers(msg) {
    store.offers = { calls: msg.calls ?? [], files: msg.files ?? [] };
    overlays.prune(store);
    overlays.render(store);
  },
};

function onMessage(msg) {
  const handler = HANDLERS[msg.type];
  if (handler) handler(msg);
}

function onLinkState(state, info) {
  document.body.dataset.link = state;
  show("not-authorised", state === "unauthorised");
  show("agent-unreachable", state === "down");
  if (state === "down") countdown(info.retryAt);
  if (state === "open") chat.flushLocal(store, ctx);
  renderBar();
}

let retryTimer = null;

function countdown(retryAt) {
  clearInterval(retryTimer);
  const tick = () => {
    const left = Math.ceil((retryAt - Date.now()) / 1000);
    setText("reconnect-note", left > 0 ? `Trying again in ${left} s` : "Trying again…");
    if (left <= 0) clearInterval(retryTimer);
  };
  tick();
  retryTimer = setInterval(tick, 500);
}

// -- derived state --------------------------------------------------------------------------

/** True while the agent would refuse typed text: mode driving, or a fresh speed at or over moving_speed. */
function isMoving() {
  const mode = drive.reading(store.values, drive.PATHS.mode);
  if (mode && mode.value === "driving") return true;
  const speed = drive.reading(store.values, drive.PATHS.speed);
  const limit = store.hello && typeof store.hello.moving_speed === "number" ? store.hello.moving_speed : 3;
  return !!speed && speed.fresh && typeof speed.value === "number" && speed.value >= limit;
}

// -- the top bar ---------------------------------------------------------------------------

function renderBar() {
  setText("bar-mode", drive.modeLabel(store.values));
  const pill = byId("connection-pill");
  const linkState = document.body.dataset.link;
  const xmpp = store.connection ? store.connection.state : "connecting";
  const state = linkState === "open" ? xmpp : "agent";
  pill.dataset.state = state;
  pill.title = store.connection && store.connection.detail ? store.connection.detail : "";
  let text = state === "agent" ? "No agent" : drive.LINKS[xmpp] ?? "Connecting";
  const queued = store.connection ? (store.connection.outbox || 0) + (store.connection.queued || 0) : 0;
  if (state !== "online" && state !== "agent" && queued > 0) text += ` · ${queued} waiting`;
  setText("connection-pill-text", text);
}

function tickClock() {
  const now = new Date();
  setText("clock", `${String(now.getHours()).padStart(2, "0")}:${String(now.getMinutes()).padStart(2, "0")}`);
}

// -- themes --------------------------------------------------------------------------------

function autoTheme() {
  const configured = store.hello ? store.hello.theme : "auto";
  if (configured === "day" || configured === "night") return configured;
  const hour = new Date().getHours();
  return hour >= DAY_FROM && hour < NIGHT_FROM ? "day" : "night";
}

function applyTheme() {
  const chosen = sessionStorage.getItem(THEME_KEY);
  const theme = chosen === "day" || chosen === "night" ? chosen : autoTheme();
  document.body.classList.toggle("theme-day", theme === "day");
  document.body.classList.toggle("theme-night", theme === "night");
  document.body.dataset.theme = theme;
  const toggle = byId("theme-toggle");
  toggle.setAttribute("aria-label", theme === "day" ? "Switch to the night theme" : "Switch to the day theme");
  setText(toggle.querySelector(".bar-theme-label"), theme === "day" ? "Night" : "Day");
}

/** The toggle picks the other theme; picking what "auto" gives anyway goes back to following it. */
function toggleTheme() {
  const next = document.body.dataset.theme === "day" ? "night" : "day";
  if (next === autoTheme()) sessionStorage.removeItem(THEME_KEY);
  else sessionStorage.setItem(THEME_KEY, next);
  applyTheme();
}

// -- screens -------------------------------------------------------------------------------

function selectScreen(name) {
  store.screen = name;
  document.body.dataset.screen = name;
  for (const section of document.querySelectorAll(".screen")) section.hidden = section.dataset.screen !== name;
  for (const tab of document.querySelectorAll(".tab")) {
    if (tab.dataset.tab === name) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  if (name === "chat") {
    if (!store.chat.selected) store.chat.selected = chat.peers(store.chat)[0] ?? null;
    if (store.chat.selected) store.chat.unread.delete(store.chat.selected);
    chat.reveal(store, ctx);
  }
}

function openChat(peer) {
  store.chat.selected = peer;
  store.chat.unread.delete(peer);
  selectScreen("chat");
}

async function loadOlder(peer, before) {
  const result = await ctx.request("chat.thread", { peer, before });
  if (!result.ok) return toast(`Could not load earlier messages: ${result.error}`);
  const older = Array.isArray(result.value) ? result.value : [];
  if (older.length === 0) store.chat.older.set(peer, false);
  chat.take(store.chat, { messages: older, full: false }, () => true);
  chat.render(store, ctx);
}

// -- toasts --------------------------------------------------------------------------------

let toastTimer = null;

function toast(text) {
  const el = setText("toast", text);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, TOAST_MS);
}

// -- start ---------------------------------------------------------------------------------

function wire() {
  // A new address typed into the same tab (the agent restarted: a new token) changes only the
  // fragment, which reloads nothing by itself: start over with it.
  window.addEventListener("hashchange", () => { if (/token=/.test(location.hash)) location.reload(); });
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectScreen(tab.dataset.tab));
  byId("theme-toggle").addEventListener("click", toggleTheme);
  byId("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = byId("chat-input");
    const body = input.value;
    if (!body.trim() || isMoving()) return;
    input.value = "";
    if (!(await ctx.sendChat(body)) && !input.value) input.value = body;
  });
  byId("toast").addEventListener("click", () => { byId("toast").hidden = true; });
  presence.wire(ctx);
  overlays.wire(store, ctx);
}

function start() {
  wire();
  applyTheme();
  tickClock();
  setInterval(tickClock, 1000);
  setInterval(applyTheme, 60000);
  selectScreen("drive");
  drive.render(store);
  presence.render(null);
  contacts.render(store, ctx);
  chat.render(store, ctx);
  const token = readToken();
  if (!token) {
    onLinkState("unauthorised");
    return;
  }
  link = new AgentLink(token, { onMessage, onState: onLinkState });
  link.connect();
}

start();
