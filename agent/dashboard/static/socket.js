// The one WebSocket to the local agent: connects, reconnects with capped backoff, and
// turns requests into promises of their `result`. It knows nothing about screens.

const BACKOFF = [0.5, 1, 2, 4, 8, 10]; // seconds before each retry; the last one repeats
const REQUEST_TIMEOUT = 15000; // ms: the agent answers every request; this only unblocks the page

export class AgentLink {
  /**
   * @param {string} token the page's key (from the address's #token=…)
   * @param {{onMessage: Function, onState: Function}} handlers
   *   onMessage(msg) for every server message but results; onState(state, detail) with
   *   state "connecting" | "open" | "down" | "unauthorised".
   */
  constructor(token, handlers) {
    this.token = token;
    this.handlers = handlers;
    this.socket = null;
    this.nextId = 1;
    this.waiting = new Map(); // request id -> {resolve, timer}
    this.failures = 0;
    this.retryTimer = null;
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws?token=${encodeURIComponent(this.token)}`;
    this.handlers.onState("connecting", "");
    let opened = false;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      this.retry(`cannot open the connection (${error})`);
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.failures = 0;
      this.handlers.onState("open", "");
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failAll("the connection to the agent was lost");
      this.afterClose(opened);
    });
  }

  /** Why did it close? A refused key is final; anything else is retried. */
  async afterClose(opened) {
    if (!opened && (await this.isRefused())) {
      this.handlers.onState("unauthorised", "");
      return;
    }
    this.retry(opened ? "the connection was lost" : "no answer");
  }

  /** The browser hides a refused upgrade's status: ask again with a plain GET, which shows it. */
  async isRefused() {
    try {
      const response = await fetch(`/ws?token=${encodeURIComponent(this.token)}`, { cache: "no-store" });
      return response.status === 401 || response.status === 403;
    } catch {
      return false; // nobody answers: the agent is down, not refusing
    }
  }

  retry(detail) {
    const delay = BACKOFF[Math.min(this.failures, BACKOFF.length - 1)];
    this.failures += 1;
    this.handlers.onState("down", { detail, retryAt: Date.now() + delay * 1000 });
    this.retryTimer = setTimeout(() => this.connect(), delay * 1000);
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message !== "object" || typeof message.type !== "string") return;
    if (message.type === "result") {
      this.settle(message);
      return;
    }
    try {
      this.handlers.onMessage(message);
    } catch (error) {
      console.error("dashboard: could not show", message.type, error);
    }
  }

  settle(result) {
    const entry = this.waiting.get(result.id);
    if (!entry) return;
    this.waiting.delete(result.id);
    clearTimeout(entry.timer);
    entry.resolve(result);
  }

  /** Sends `{type, ...fields}`; resolves with the agent's result ({ok, error, value}), never rejects. */
  request(type, fields = {}) {
    if (!this.isOpen) return Promise.resolve({ ok: false, error: "the agent is not reachable" });
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle({ id, ok: false, error: "the agent did not answer" }),
        REQUEST_TIMEOUT);
      this.waiting.set(id, { resolve, timer });
      this.socket.send(JSON.stringify({ ...fields, id, type }));
    });
  }

  failAll(error) {
    for (const id of [...this.waiting.keys()]) this.settle({ id, ok: false, error });
  }
}
