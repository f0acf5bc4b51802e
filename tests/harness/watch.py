"""``make watch``: log in as the demo operator and print the demo car's presence as it changes.

Run it in a second terminal while ``make run`` is running; it is what any XMPP client
logged in as operator@localhost shows, in one line per change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from tests.harness.agentproc import Watcher
from tests.harness.prosody import ServerInfo

SHOWS = {"": "available", "away": "away", "xa": "extended away", "dnd": "do not disturb",
         "chat": "chatty", "unavailable": "offline"}


async def watch(folder: Path, operator: str, car: str) -> int:
    server_json = folder / "demo" / "server.json"
    if not server_json.exists():
        print(f"no {server_json}: start `make run` first, in another terminal", file=sys.stderr)
        return 1
    doc = json.loads(server_json.read_text())
    info = ServerInfo(doc["host"], doc["port"], doc["domain"], Path(doc["ca_file"]),
                      doc["direct_tls_port"], doc["http_port"])
    account = doc["accounts"][operator]
    car_jid = doc["accounts"][car]["jid"]
    password = Path(account["password_file"]).read_text().strip()
    watcher = Watcher(account["jid"], password, info, car_jid)
    await watcher.start()
    print(f"logged in as {account['jid']}, watching {car_jid} (Ctrl-C to stop)")
    shown = 0
    last: tuple[str, str] | None = None
    try:
        while True:
            await watcher.wait_for(lambda: len(watcher.seen) > shown, timeout=3600)
            for p in watcher.seen[shown:]:
                show = "unavailable" if p.type == "unavailable" else p.show
                if (show, p.status) != last:  # the same presence again (e.g. on re-subscribing)
                    print(f"{time.strftime('%H:%M:%S')}  {car_jid}: {SHOWS.get(show, show):15} {p.status}")
                last = (show, p.status)
            shown = len(watcher.seen)
    finally:
        await watcher.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.watch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("run"), help="make run's folder (default: run)")
    parser.add_argument("--operator", default="operator", help="the account to log in as")
    parser.add_argument("--car", default="car", help="the account to watch")
    args = parser.parse_args()
    try:
        return asyncio.run(watch(args.folder, args.operator, args.car))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
