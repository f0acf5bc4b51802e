// The Presence screen: what contacts see now, and the driver's choice: automatic
// (follows the vehicle) or a fixed show until they go back to automatic.

import { byId, setText } from "./dom.js";
import { showLabel } from "./contacts.js";

export function render(presence) {
  const current = presence ? presence.show : null;
  const dot = byId("presence-dot");
  dot.dataset.show = current ?? "offline";
  setText("presence-show", presence ? showLabel(current) : "--");
  setText("presence-status", presence && presence.status ? presence.status : "\u00a0");
  setText("presence-auto-note", !presence ? "\u00a0" : presence.auto
    ? "Automatic: follows the car"
    : `Set by you. Automatic would be: ${showLabel(presence.auto_show)}${presence.auto_status ? ` · ${presence.auto_status}` : ""}`);
  const chosen = !presence ? null : presence.auto ? "auto" : current;
  for (const button of document.querySelectorAll(".choice")) {
    button.setAttribute("aria-pressed", String(button.dataset.show === chosen));
  }
}

/** Wires the choice buttons: each sends presence.auto or presence.set. */
export function wire(ctx) {
  for (const button of document.querySelectorAll(".choice")) {
    button.addEventListener("click", async () => {
      const show = button.dataset.show;
      const result = show === "auto" ? await ctx.request("presence.auto") : await ctx.request("presence.set", { show });
      if (!result.ok) ctx.toast(`Presence not changed: ${result.error}`);
    });
  }
}
