// Small DOM helpers. Everything from the agent is text: it only ever reaches the page
// through textContent and setAttribute, never innerHTML (a contact's name or a message
// body could be hostile markup).

const SVG = "http://www.w3.org/2000/svg";

/** The element with data-testid `id` (the stable hooks the tests use too). */
export function byId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** A new element: `props` are attributes (class, data-*, …) or `on<event>` handlers; children are text or nodes. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Sets the text of element `id` (only when it changed, so nothing repaints for nothing). */
export function setText(id, text, root = document) {
  const el = typeof id === "string" ? byId(id, root) : id;
  const value = String(text);
  if (el && el.textContent !== value) el.textContent = value;
  return el;
}

/** Replaces the children of `el` with `children` (nodes or text). */
export function replaceChildren(el, children) {
  el.replaceChildren();
  append(el, children);
}

/** Shows or hides element `id`. */
export function show(id, visible, root = document) {
  const el = typeof id === "string" ? byId(id, root) : id;
  if (el) el.hidden = !visible;
  return el;
}

/** A small icon from one SVG path (24×24 box). */
export function icon(path, cls = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", cls);
  svg.setAttribute("aria-hidden", "true");
  const p = document.createElementNS(SVG, "path");
  p.setAttribute("d", path);
  svg.append(p);
  return svg;
}

export const ICONS = {
  clock: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 2a8 8 0 1 1 0 16 8 8 0 0 1 0-16zm-1 3v6l5 3 1-1.7-4-2.3V7h-2z",
};

// -- formatting ---------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

/** "14:05" for an epoch-seconds time today, "3 Mar 14:05" for another day. */
export function clockTime(epoch) {
  const when = new Date(epoch * 1000);
  const now = new Date();
  const hm = `${pad(when.getHours())}:${pad(when.getMinutes())}`;
  if (when.toDateString() === now.toDateString()) return hm;
  const month = when.toLocaleString("en-GB", { month: "short" });
  return `${when.getDate()} ${month} ${hm}`;
}

/** "1.4 MB" for a byte count. */
export function fileSize(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return "unknown size";
  const units = ["bytes", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} ${units[0]}` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** The name to show for a JID: the roster name, else the JID's local part. */
export function displayName(jid, contacts) {
  const known = contacts.find((c) => c.jid === jid);
  if (known && known.name && known.name !== jid) return known.name;
  const text = String(jid ?? "");
  const at = text.indexOf("@");
  return at > 0 ? text.slice(0, at) : text;
}

/** A number for display, or "--" when it is not one. */
export function num(value, digits = 0) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "--";
}
