// The Contacts screen: people waiting for an answer (approve / refuse) on top, then the
// roster with a presence dot each; tapping a contact opens the chat with them.

import { byId, displayName, h, replaceChildren, show } from "./dom.js";

const SHOWS = { chat: "Available", available: "Available", away: "Away", xa: "Extended away",
  dnd: "Do not disturb", offline: "Offline", unavailable: "Offline" };
const ORDER = { chat: 0, available: 0, dnd: 1, away: 2, xa: 3 };

/** "Available", "Away"… for a show value ("offline" when none). */
export function showLabel(value) {
  return SHOWS[value] ?? "Offline";
}

export function render(store, ctx) {
  renderPending(store.pending, ctx);
  renderRoster(store.contacts, ctx);
  const badge = byId("badge-contacts");
  badge.textContent = String(store.pending.length);
  badge.hidden = store.pending.length === 0;
}

function renderPending(pending, ctx) {
  show("pending-title", pending.length > 0);
  replaceChildren(byId("pending-list"), pending.map((request) => pendingRow(request, ctx)));
}

function pendingRow(request, ctx) {
  const jid = String(request.jid ?? "");
  const name = request.nick ? String(request.nick) : displayName(jid, []);
  const answer = (type, button) => async () => {
    button.disabled = true;
    const result = await ctx.request(type, { jid });
    if (!result.ok) {
      button.disabled = false;
      ctx.toast(`Could not answer ${jid}: ${result.error}`);
    }
  };
  const refuse = h("button", { type: "button", class: "btn btn-quiet", "data-testid": "refuse-button" }, "Refuse");
  const approve = h("button", { type: "button", class: "btn btn-primary", "data-testid": "approve-button" }, "Approve");
  refuse.addEventListener("click", answer("contacts.refuse", refuse));
  approve.addEventListener("click", answer("contacts.approve", approve));
  return h("li", { class: "row row-pending", "data-testid": "pending-row", "data-jid": jid },
    avatar(name),
    h("div", { class: "row-main" },
      h("div", { class: "row-title" }, name),
      h("div", { class: "row-sub" }, jid),
      h("div", { class: "row-sub" }, request.status ? `“${request.status}”` : "asks to see the car's presence")),
    h("div", { class: "row-actions" }, refuse, approve));
}

function renderRoster(contacts, ctx) {
  const sorted = [...contacts].sort((a, b) =>
    (ORDER[a.show] ?? 9) - (ORDER[b.show] ?? 9) || displayName(a.jid, contacts).localeCompare(displayName(b.jid, contacts)));
  replaceChildren(byId("contact-list"), sorted.map((contact) => contactRow(contact, contacts, ctx)));
  show("contacts-empty", contacts.length === 0);
}

function contactRow(contact, contacts, ctx) {
  const jid = String(contact.jid ?? "");
  const name = displayName(jid, contacts);
  const presence = contact.show && contact.show !== "offline" ? showLabel(contact.show) : "Offline";
  const status = contact.status ? `${presence} · ${contact.status}` : presence;
  return h("li", { class: "row row-contact", "data-testid": "contact-row", "data-jid": jid, "data-show": contact.show ?? "offline" },
    avatar(name, contact.show ?? "offline"),
    h("div", { class: "row-main" },
      h("div", { class: "row-title" }, name, h("span", { class: "row-jid" }, jid)),
      h("div", { class: "row-sub", "data-testid": "contact-status" }, status)),
    h("div", { class: "row-actions" },
      h("button", { type: "button", class: "btn btn-quiet", "data-testid": "contact-chat", onclick: () => ctx.openChat(jid) },
        "Message")));
}

/** A round badge with the first letter, and a presence dot when `presence` is given. */
export function avatar(name, presence) {
  const letter = (String(name).trim().charAt(0) || "?").toUpperCase();
  return h("span", { class: "avatar", "aria-hidden": "true" }, letter,
    presence ? h("span", { class: "dot", "data-show": presence }) : null);
}
