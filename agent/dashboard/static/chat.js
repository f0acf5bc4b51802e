// The Chat screen: threads on the left, the open conversation on the right with receipt
// ticks on the driver's own messages. While the vehicle moves the text field is off and
// the profile's quick replies are offered as big buttons instead.
//
// What the driver sends while the page cannot reach the agent waits here, in order, and
// goes to the agent (which keeps its own durable outbox) as soon as the link is back.

import { ICONS, byId, clockTime, displayName, h, icon, replaceChildren, setText, show } from "./dom.js";
import { avatar } from "./contacts.js";

const PAGE = 50; // messages per thread the agent sends at once
const TICKS = {
  sent: ["✓", "Sent"],
  acked: ["✓", "On the server"],
  delivered: ["✓✓", "Delivered"],
  failed: ["⚠", "Not sent"],
};

export function createState() {
  return { threads: new Map(), selected: null, unread: new Map(), local: [], older: new Map(), localSeq: 0 };
}

/** Takes a `messages` message from the agent into the chat state. */
export function take(chat, message, isVisible) {
  if (message.full) chat.threads = new Map();
  for (const m of Array.isArray(message.messages) ? message.messages : []) {
    if (!m || typeof m.peer !== "string") continue;
    const isNew = !chat.threads.get(m.peer)?.has(m.id);
    upsert(chat, m);
    if (!message.full && isNew && m.direction === "in" && !isVisible(m.peer)) {
      chat.unread.set(m.peer, (chat.unread.get(m.peer) ?? 0) + 1);
    }
  }
}

function upsert(chat, m) {
  if (!chat.threads.has(m.peer)) chat.threads.set(m.peer, new Map());
  chat.threads.get(m.peer).set(m.id, m);
}

function sorted(thread) {
  return [...(thread?.values() ?? [])].sort((a, b) => (a.at - b.at) || (a.id - b.id));
}

/** Peers, most recent conversation first. */
export function peers(chat) {
  const last = (peer) => {
    const list = sorted(chat.threads.get(peer));
    return list.length ? list[list.length - 1].at : Infinity; // a new, empty conversation stays on top
  };
  const all = new Set([...chat.threads.keys(), ...chat.local.map((l) => l.peer)]);
  if (chat.selected) all.add(chat.selected);
  return [...all].sort((a, b) => last(b) - last(a));
}

export function unreadTotal(chat) {
  let total = 0;
  for (const n of chat.unread.values()) total += n;
  return total;
}

// -- rendering ------------------------------------------------------------------------------

export function render(store, ctx) {
  const chat = store.chat;
  keepingTheLatestInView(chat, () => {
    renderThreads(chat, store.contacts, ctx);
    renderConversation(chat, store.contacts, ctx);
    composer(store, ctx);
  });
  const badge = byId("badge-chat");
  const unread = unreadTotal(chat);
  badge.textContent = String(unread);
  badge.hidden = unread === 0;
}

function renderThreads(chat, contacts, ctx) {
  const rows = peers(chat).map((peer) => {
    const list = sorted(chat.threads.get(peer));
    const last = list[list.length - 1];
    const unread = chat.unread.get(peer) ?? 0;
    const name = displayName(peer, contacts);
    return h("li", { class: "thread" + (peer === chat.selected ? " selected" : ""), "data-testid": "thread-row",
      "data-peer": peer, role: "button", tabindex: "0", onclick: () => ctx.openChat(peer) },
    avatar(name),
    h("div", { class: "thread-main" },
      h("div", { class: "thread-title" }, h("span", { class: "thread-name" }, name),
        last ? h("span", { class: "thread-time" }, clockTime(last.at)) : null),
      h("div", { class: "thread-preview" }, last ? `${last.direction === "out" ? "You: " : ""}${last.body}` : "New conversation")),
    unread ? h("span", { class: "badge badge-inline", "data-testid": "thread-unread" }, String(unread)) : null);
  });
  replaceChildren(byId("thread-list"), rows);
}

function renderConversation(chat, contacts, ctx) {
  const list = byId("message-list");
  const peer = chat.selected;
  setText("chat-peer", peer ? displayName(peer, contacts) : "No conversation");
  byId("chat-peer").title = peer ?? "";
  show("chat-empty", !peer);
  show("chat-form", !!peer);
  const messages = peer ? sorted(chat.threads.get(peer)) : [];
  const local = chat.local.filter((l) => l.peer === peer);
  const items = [];
  if (peer && messages.length >= PAGE && chat.older.get(peer) !== false) items.push(olderButton(peer, messages[0], ctx));
  items.push(...messages.map(bubble), ...local.map(localBubble));
  replaceChildren(list, items);
}

function olderButton(peer, oldest, ctx) {
  return h("li", { class: "older" }, h("button", { type: "button", class: "btn btn-quiet", "data-testid": "chat-older",
    onclick: () => ctx.loadOlder(peer, oldest.id) }, "Earlier messages"));
}

function bubble(m) {
  return h("li", { class: `msg msg-${m.direction === "out" ? "out" : "in"}`, "data-testid": "message",
    "data-direction": m.direction, "data-state": m.state ?? "", "data-id": m.id },
  h("div", { class: "msg-body", "data-testid": "message-body" }, String(m.body ?? "")),
  h("div", { class: "msg-meta" }, clockTime(m.at), m.direction === "out" ? tick(m.state) : null));
}

function localBubble(l) {
  return h("li", { class: "msg msg-out msg-local", "data-testid": "message", "data-direction": "out", "data-state": "local" },
    h("div", { class: "msg-body", "data-testid": "message-body" }, l.body),
    h("div", { class: "msg-meta" }, "waiting for the agent", tick("queued")));
}

function tick(state) {
  if (state === "queued" || !TICKS[state]) {
    const el = h("span", { class: "tick tick-queued", "data-testid": "tick", title: "Queued", "aria-label": "Queued" });
    el.append(icon(ICONS.clock, "icon icon-tick"));
    return el;
  }
  const [mark, label] = TICKS[state];
  return h("span", { class: `tick tick-${state}`, "data-testid": "tick", title: label, "aria-label": label }, mark);
}

/** Runs `change`; a conversation scrolled to its end (or newly opened) is at its end after it too. */
function keepingTheLatestInView(chat, change) {
  const list = byId("message-list");
  const peer = chat.selected ?? "";
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 8 || list.dataset.peer !== peer;
  change();
  if (atEnd) list.scrollTop = list.scrollHeight;
  list.dataset.peer = peer;
}

/** Renders the screen as it comes into view, scrolled to the latest message. */
export function reveal(store, ctx) {
  byId("message-list").dataset.peer = ""; // as if newly opened: hidden, it kept no scroll position
  render(store, ctx);
}

/** The text field, or the quick replies while the vehicle moves (they take room from the messages). */
export function renderComposer(store, ctx) {
  keepingTheLatestInView(store.chat, () => composer(store, ctx));
}

function composer(store, ctx) {
  const moving = ctx.isMoving();
  const input = byId("chat-input");
  input.disabled = moving;
  input.placeholder = moving ? "Typing is disabled while driving: tap a reply" : "Message";
  byId("chat-send").disabled = moving;
  byId("chat-form").classList.toggle("is-disabled", moving);
  show("quick-replies", moving && !!store.chat.selected);
}

/** The quick replies as big buttons (from hello; they change only when the profile does). */
export function renderQuickReplies(replies, ctx) {
  const buttons = (Array.isArray(replies) ? replies : []).map((text) =>
    h("button", { type: "button", class: "btn btn-quick", "data-testid": "quick-reply",
      onclick: () => ctx.sendChat(String(text)) }, String(text)));
  replaceChildren(byId("quick-reply-buttons"), buttons);
}

// -- sending --------------------------------------------------------------------------------

/** Sends `body` to the open conversation now, or keeps it until the agent is reachable. */
export async function send(store, ctx, body) {
  const peer = store.chat.selected;
  const text = String(body).trim();
  if (!peer || !text) return false;
  if (!ctx.isLinkOpen()) {
    store.chat.local.push({ key: ++store.chat.localSeq, peer, body: text });
    return true;
  }
  const result = await ctx.request("chat.send", { to: peer, body: text });
  if (!result.ok) ctx.toast(`Not sent: ${result.error}`);
  return result.ok;
}

/** After a reconnect: hand what waited on the page to the agent, oldest first. */
export async function flushLocal(store, ctx) {
  while (store.chat.local.length && ctx.isLinkOpen()) {
    const next = store.chat.local[0];
    const result = await ctx.request("chat.send", { to: next.peer, body: next.body });
    if (!result.ok && !ctx.isLinkOpen()) return; // lost again: keep it for the next time
    store.chat.local.shift();
    if (!result.ok) ctx.toast(`Not sent to ${next.peer}: ${result.error}`);
    ctx.renderChat();
  }
}
