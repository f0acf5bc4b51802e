"""``make watch``: the demo car as the fleet sees it — its presence, and its telemetry.

Run it in a second terminal while ``make run`` is running. It logs in as the demo
operator (what any XMPP client logged in as operator@localhost shows, one line per
presence change) and as the fleet account subscribed to the car's telemetry node
(one line per batch of samples received).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent.profile.model import TelemetryConfig
from agent.telemetry.publisher import node_name
from devserver.clients import Watcher
from devserver.fleet import FleetReceiver, ReceivedBatch
from devserver.prosody import ServerInfo

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
    fleet = await _fleet(doc, info, car_jid)
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
        if fleet is not None:
            await fleet.stop()


async def _fleet(doc: dict[str, Any], info: ServerInfo, car_jid: str) -> FleetReceiver | None:
    """The fleet's receiver on the car's telemetry node, printing each batch as it arrives."""
    account = doc["accounts"].get("fleet")
    if account is None:
        return None
    node = node_name(TelemetryConfig().node, car_jid)
    receiver = FleetReceiver(account["jid"], Path(account["password_file"]).read_text().strip(), info,
                             f"pubsub.{info.domain}", node)
    receiver.when_batch = _print_batch
    await receiver.start()
    print(f"logged in as {account['jid']}, subscribed to telemetry node {node}")
    return receiver


def _print_batch(batch: ReceivedBatch) -> None:
    latest: dict[str, object] = {}
    for sample in batch.samples:
        latest[sample.path.removeprefix("Vehicle.")] = sample.value
    shown = ", ".join(f"{name} {value}" for name, value in list(latest.items())[:5])
    print(f"{time.strftime('%H:%M:%S')}  telemetry {batch.item_id}: {len(batch.samples)} samples ({shown})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devserver.watch", description=__doc__,
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
