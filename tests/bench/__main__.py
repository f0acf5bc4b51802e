"""``make bench``: measures the CAN pipeline, the agent's memory and start-up; writes BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import logging
import datetime
import os
import platform
from pathlib import Path

from agent.profile import load_profile
from tests.bench import can_pipeline, dashboard_load, footprint, parked, runtime, telemetry_wire, xmpp_figures
from tests.harness.agentproc import DEMO_PROFILE, REPO

OUT = REPO / "BENCHMARKS.md"
COMMAND = "make bench"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


async def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the proxy's cuts make the agent warn, on purpose
    print("CAN pipeline on a saturated bus (5 runs of 5 s each, alternating with the baseline)")
    profile = load_profile(DEMO_PROFILE, environ={"HEADUNIT_PASSWORD": "bench", "HEADUNIT_CA_FILE": __file__})
    assert profile.vehicle.can is not None and profile.vehicle.can.replay_file is not None
    runs = await can_pipeline.compare(profile.vehicle.can, profile.vehicle.can.replay_file)
    ours = can_pipeline.median_run(runs["headunit"])
    base = can_pipeline.median_run(runs["baseline"])
    ratio = can_pipeline.ratio(runs)
    print("Agent footprint on a local Prosody (5 runs each), in a venv of the runtime packages only")
    car_python = runtime.python()
    prints = await footprint.measure(5, python=car_python)
    fp = footprint.medians(prints)
    headless_prints = await footprint.measure(5, headless=True, python=car_python)
    headless = footprint.medians(headless_prints)
    breakdown = runtime.import_breakdown(car_python)
    print("The parked agent (ignition off, nothing happening) over a minute")
    quiet, floor = await parked.measure(car_python)
    print("XMPP: presence latency and resumption (private Prosody, TCP proxy)")
    xmpp = await xmpp_figures.measure()
    print("Telemetry bytes on the wire (TLS and stream management included)")
    wire = await telemetry_wire.measure()
    for figure in wire:
        print(f"  {figure.samples_per_publish} sample(s) per publish: {figure.bytes_per_sample:.1f} B/sample")
    batched, single = wire[0], wire[-1]
    print("Dashboard page load in Debian's Chromium (fresh browser context each run)")
    loads = await dashboard_load.measure()
    page = dashboard_load.medians(loads)
    today = datetime.date.today().isoformat()
    OUT.write_text(f"""# Benchmarks

Written by `{COMMAND}` on {today}. Machine: {machine()}.
Figures are medians; the machine is shared and noisy, so compare ratios measured in the same run.

## CAN pipeline on a saturated bus

The demo drive's frames, sent by a thread through python-can's virtual interface at
{can_pipeline.RATE:.0f} frames/s (the worst-case classic CAN rate at 1 Mbit/s), {len(runs['headunit'])} runs of
{ours.frames_sent} frames each. CPU is the process's CPU time less the sending thread's own.

| pipeline | CPU share of one core | CPU per frame | frames handled / sent |
|---|---|---|---|
| headunit: receive, filter, change detection, decode, state update, mode tracker | {ours.share:.1%} | {ours.per_frame_us:.1f} µs | {ours.frames_handled} / {ours.frames_sent} |
| baseline: python-can `Notifier` in the loop + cantools `decode_message` on every frame | {base.share:.1%} | {base.per_frame_us:.1f} µs | {base.frames_handled} / {base.frames_sent} |

Baseline CPU / headunit CPU (median of paired runs): **{ratio:.2f}×**. Target: headunit under 10% of one core.
"headunit" hands only mapped frames to the loop (the baseline hands every frame), in 5 ms batches.

All runs (share of one core): headunit {', '.join(f'{r.share:.1%}' for r in runs['headunit'])};
baseline {', '.join(f'{r.share:.1%}' for r in runs['baseline'])}.

## The running agent

`headunit run profiles/demo.toml` against a local Prosody (STARTTLS, SCRAM), {len(prints)} runs.

| figure | median | runs |
|---|---|---|
| start to online (process start → session established) | {fp.online_s:.2f} s | {', '.join(f'{p.online_s:.2f}' for p in prints)} |
| idle RSS, no calls (5 s after online, demo replay running) | {fp.rss_mb:.1f} MB | {', '.join(f'{p.rss_mb:.1f}' for p in prints)} |
| idle USS (memory only this process holds) | {fp.uss_mb:.1f} MB | {', '.join(f'{p.uss_mb:.1f}' for p in prints)} |
| idle RSS without the dashboard (`[dashboard] enabled = false`) | {headless.rss_mb:.1f} MB | {', '.join(f'{p.rss_mb:.1f}' for p in headless_prints)} |

Target: idle RSS with the dashboard at most 55 MB (it was 65.1 MB before issue 10, 55.2 MB without
the dashboard). Measured in `build/bench-venv`, which holds the runtime packages only, as a car
does (the test venv's pygments alone would add 2.5 MB: slixmpp imports it when it is there).

Where the memory goes: RSS of a fresh interpreter of that venv after importing each part, in
the agent's order (the agent's own data and the loaded drive come on top):

| part | MB |
|---|---|
{chr(10).join(f'| {name} | {mb:.1f} |' for name, mb in breakdown)}

## The parked agent

The demo drive replayed at {parked.SPEED:.0f}× until the ignition is off, then {parked.WINDOW:.0f} s of nothing
happening; every thread of the process, from /proc (CPU: `schedstat`; wake-ups: context switches).
Baseline in the same run: a Python interpreter that only sleeps.

| figure | the parked agent | a sleeping interpreter | before issue 10 |
|---|---|---|---|
| CPU share of one core | {quiet.cpu_share:.3%} | {floor.cpu_share:.3%} | 0.45 % |
| wake-ups per second | {quiet.wakeups_per_s:.2f} | {floor.wakeups_per_s:.2f} | 23 |
| threads | {quiet.threads} | {floor.threads} | |

Target: at most 0.1 % of a core and 2 wake-ups/s. Per thread: {'; '.join(f'{name} {cpu:.3%}, {wake:.2f}/s' for name, cpu, wake in quiet.per_thread)}.

## XMPP on the road

A private Prosody; the car's session goes through a TCP proxy the benchmark controls.

| figure | p50 | p99 | samples |
|---|---|---|---|
| presence latency: vehicle mode change in the state → the operator's client has the presence | {xmpp["presence"].p50 * 1000:.1f} ms | {xmpp["presence"].p99 * 1000:.1f} ms | {xmpp["presence"].n} |
| link restored → session resumed (after a 2 s outage; reconnect backoff 1 s initial, full jitter) | {xmpp["restored"].p50:.2f} s | {xmpp["restored"].p99:.2f} s | {xmpp["restored"].n} |
| of which the reconnection itself: TCP, TLS, SCRAM and XEP-0198 resume | {xmpp["handshake"].p50 * 1000:.0f} ms | {xmpp["handshake"].p99 * 1000:.0f} ms | {xmpp["handshake"].n} |

The time from the link coming back to the session being resumed is mostly the jittered wait
before the next attempt (on purpose: a fleet must not reconnect in lockstep).

## Telemetry bytes on the wire

Bytes through the proxy in both directions (TLS records, the PubSub publish, its result and the
stream-management ack), median of {telemetry_wire.PUBLISHES} publishes of realistic samples (speed, engine
speed, latitude, longitude).

| samples per publish | bytes per sample | bytes per publish |
|---|---|---|
| {batched.samples_per_publish} (batched) | {batched.bytes_per_sample:.1f} | {batched.bytes_per_publish:.0f} |
| {single.samples_per_publish} (single) | {single.bytes_per_sample:.1f} | {single.bytes_per_publish:.0f} |

Reference: Teltonika Codec 8 spends 45 bytes per record.

## Dashboard page load

Debian's Chromium (headless, 800×480) opens the agent's page {len(loads)} times, each in a fresh
browser context (empty cache and storage, like the kiosk after a boot), the agent running the demo
drive on a local Prosody. Wall clock around the Playwright calls, so every figure includes
Playwright's own round trips; the baseline is the same navigation to the agent's `/healthz` text.

| figure | median | runs |
|---|---|---|
| navigation → the page live (greeting and state shown, WebSocket open) | {page.ready_s * 1000:.0f} ms | {', '.join(f'{r.ready_s * 1000:.0f}' for r in loads)} |
| navigation → a tap on Contacts has shown that screen | {page.interactive_s * 1000:.0f} ms | {', '.join(f'{r.interactive_s * 1000:.0f}' for r in loads)} |
| baseline: navigation → `/healthz` loaded | {page.baseline_s * 1000:.0f} ms | {', '.join(f'{r.baseline_s * 1000:.0f}' for r in loads)} |

Target: interactive in under 1 s. Live page / baseline: **{page.ready_s / page.baseline_s:.1f}×**.
""")
    print(f"wrote {OUT.relative_to(REPO)}: CAN {ours.share:.1%} vs baseline {base.share:.1%} "
          f"({ratio:.2f}x), online {fp.online_s:.2f} s, RSS {fp.rss_mb:.1f} MB, "
          f"presence p50 {xmpp['presence'].p50 * 1000:.1f} ms, {batched.bytes_per_sample:.1f} B/sample batched, "
          f"dashboard interactive {page.interactive_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
