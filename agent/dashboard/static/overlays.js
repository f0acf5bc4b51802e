// What pops over every screen: a command confirmation (full screen, with a countdown),
// an incoming call, an incoming file, an operator's message. One at a time, in that
// order of urgency; the next one shows when the first is answered.

import { byId, clockTime, displayName, fileSize, setText, show } from "./dom.js";

const KINDS = ["question", "call", "file", "notice"];

export function createState() {
  return { hidden: new Set(), answered: new Set(), shown: null, firstSeen: new Map(), timer: null };
}

/** The one prompt to show now, as {kind, item}, or null. */
export function pick(store) {
  const o = store.overlays;
  const open = (kind, list) => (Array.isArray(list) ? list : []).filter((x) => x && !o.answered.has(`${kind}:${x.id}`));
  const candidates = {
    question: open("question", store.prompts.questions),
    call: open("call", store.offers.calls),
    file: open("file", store.offers.files),
    notice: open("notice", store.prompts.notices).filter((n) => !o.hidden.has(n.id)),
  };
  for (const kind of KINDS) {
    if (candidates[kind].length) return { kind, item: candidates[kind][0], more: candidates[kind].length - 1 };
  }
  return null;
}

export function render(store) {
  const o = store.overlays;
  const now = pick(store);
  o.shown = now;
  for (const kind of KINDS) show(`${kind}-overlay`, now !== null && now.kind === kind);
  if (now === null) return stopTimer(o);
  const fill = { question: fillQuestion, call: fillCall, file: fillFile, notice: fillNotice }[now.kind];
  fill(now.item, now.more, store);
  enable(now.kind, true);
  if (now.kind === "question") startTimer(store);
  else stopTimer(o);
}

function fillQuestion(q, more, store) {
  setText("question-text", q.question ?? "");
  setText("question-requester", q.requester ?? "");
  if (!store.overlays.firstSeen.has(q.id)) store.overlays.firstSeen.set(q.id, Date.now() / 1000);
  tickQuestion(store);
}

function fillCall(call, more, store) {
  const video = Array.isArray(call.media) && call.media.includes("video");
  setText("call-media", video ? "Incoming video call" : "Incoming call");
  const name = displayName(call.peer, store.contacts);
  setText("call-avatar", (name.trim().charAt(0) || "?").toUpperCase());
  setText("call-peer", name);
  setText("call-more", `${call.peer ?? ""}${more ? ` · ${more} more waiting` : ""}`);
}

function fillFile(file, more, store) {
  setText("file-name", file.name ?? "");
  setText("file-size", fileSize(file.size));
  setText("file-peer", file.peer ?? "");
  setText("file-more", more ? `${more} more waiting` : "");
}

function fillNotice(notice, more) {
  setText("notice-sender", notice.sender ?? "");
  setText("notice-text", notice.text ?? "");
  setText("notice-time", typeof notice.at === "number" ? clockTime(notice.at) : "");
  setText("notice-more", more ? ` · ${more} more` : "");
  show("notice-ack", !!notice.ack_required);
  show("notice-ok", !notice.ack_required);
}

// -- the question's countdown -------------------------------------------------------------

function startTimer(store) {
  if (store.overlays.timer === null) store.overlays.timer = setInterval(() => tickQuestion(store), 250);
}

function stopTimer(o) {
  if (o.timer !== null) clearInterval(o.timer);
  o.timer = null;
}

function tickQuestion(store) {
  const shown = store.overlays.shown;
  if (!shown || shown.kind !== "question") return;
  const q = shown.item;
  const now = Date.now() / 1000;
  const left = Math.max(0, (Number(q.expires) || now) - now);
  const start = Math.min(store.overlays.firstSeen.get(q.id) ?? now, now);
  const total = Math.max(1, (Number(q.expires) || now) - start);
  setText("question-countdown", left > 0 ? `${Math.ceil(left)} s to answer` : "Time is up");
  byId("question-bar").style.width = `${Math.round((left / total) * 100)}%`;
  byId("question-accept").disabled = left <= 0;
}

// -- answering ----------------------------------------------------------------------------

// A request's own `id` is its number; what it answers is named by its kind.
const ACTIONS = {
  "question-accept": ["question.answer", (q) => ({ question: q.id, accept: true })],
  "question-decline": ["question.answer", (q) => ({ question: q.id, accept: false })],
  "call-accept": ["call.answer", (c) => ({ call: c.id })],
  "call-decline": ["call.decline", (c) => ({ call: c.id })],
  "file-accept": ["file.accept", (f) => ({ file: f.id })],
  "file-decline": ["file.decline", (f) => ({ file: f.id })],
  "notice-ack": ["notice.ack", (n) => ({ notice: n.id })],
  // OK on a message that asked for no acknowledgement: seen, so it does not come back; nobody is told.
  "notice-ok": ["notice.ack", (n) => ({ notice: n.id })],
};

function enable(kind, on) {
  for (const id of Object.keys(ACTIONS).filter((a) => a.startsWith(`${kind}-`))) byId(id).disabled = !on;
}

/** Wires the overlay buttons once; each answers the prompt shown when it is tapped. */
export function wire(store, ctx) {
  for (const [id, [type, fields]] of Object.entries(ACTIONS)) {
    byId(id).addEventListener("click", async () => {
      const shown = store.overlays.shown;
      if (!shown) return;
      enable(shown.kind, false);
      const result = await ctx.request(type, fields(shown.item));
      if (result.ok) store.overlays.answered.add(`${shown.kind}:${shown.item.id}`);
      else ctx.toast(`Not answered: ${result.error}`);
      render(store);
    });
  }
}

/** Forgets answers for prompts the agent no longer lists (their ids may not come back). */
export function prune(store) {
  const o = store.overlays;
  const live = new Set([
    ...(store.prompts.questions ?? []).map((x) => `question:${x.id}`),
    ...(store.offers.calls ?? []).map((x) => `call:${x.id}`),
    ...(store.offers.files ?? []).map((x) => `file:${x.id}`),
    ...(store.prompts.notices ?? []).map((x) => `notice:${x.id}`),
  ]);
  for (const key of [...o.answered]) if (!live.has(key)) o.answered.delete(key);
}
