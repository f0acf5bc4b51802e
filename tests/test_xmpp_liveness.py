"""The dead-link monitor's decisions, on a manual clock (no sleeping)."""

from __future__ import annotations

from agent.xmpp.liveness import LinkMonitor


class Link:
    def __init__(self) -> None:
        self.now = 0.0
        self.received = 0.0
        self.sent = 0.0
        self.probes: list[float] = []

    def monitor(self, interval: float = 60, timeout: float = 20) -> LinkMonitor:
        return LinkMonitor(last_received=lambda: self.received, last_sent=lambda: self.sent,
                           send_probe=lambda: self.probes.append(self.now), ping_interval=interval,
                           ping_timeout=timeout, clock=lambda: self.now)


def test_a_quiet_link_is_probed_after_the_interval_and_declared_dead_after_the_timeout() -> None:
    link = Link()
    monitor = link.monitor(interval=60, timeout=20)
    link.now = 59.9
    assert not monitor.step() and link.probes == []
    link.now = 60.0
    assert not monitor.step() and link.probes == [60.0]
    link.now = 79.9
    assert not monitor.step()
    link.now = 80.0
    assert monitor.step(), "20 s without a byte after the probe: dead"


def test_an_answer_to_the_probe_keeps_the_link_alive() -> None:
    link = Link()
    monitor = link.monitor(interval=60, timeout=20)
    link.now = 60.0
    monitor.step()
    link.now = link.received = 60.3  # the pong
    assert not monitor.step() and monitor.probe_sent is None
    link.now = 119.0
    assert not monitor.step() and len(link.probes) == 1, "next probe only after another quiet interval"


def test_sending_without_hearing_back_probes_early() -> None:
    link = Link()
    monitor = link.monitor(interval=300, timeout=10)
    link.now = link.sent = 100.0  # we sent a message at t=100, nothing has come back since t=0
    assert not monitor.step() and link.probes == [100.0], "quiet since 0 and an unanswered send: probe"
    link.now = 110.0
    assert monitor.step()


def test_a_busy_link_is_never_probed() -> None:
    link = Link()
    monitor = link.monitor(interval=60, timeout=20)
    for t in range(0, 600, 10):
        link.now = link.received = float(t)
        link.sent = float(t) - 0.5
        assert not monitor.step()
    assert link.probes == []


def test_the_next_check_is_the_nearest_deadline_so_the_monitor_needs_no_tick() -> None:
    link = Link()
    monitor = link.monitor(interval=60, timeout=20)
    assert monitor.next_check() == 60.0  # quiet: the ping is due after the interval
    link.now, link.sent = 10.0, 10.0  # something went out and nothing came back yet
    assert monitor.next_check() == 5.0  # SENT_UNANSWERED after the last data in: due now
    assert not monitor.step() and link.probes == [10.0]
    assert monitor.next_check() == 30.0  # the probe's timeout


async def test_the_monitor_sleeps_until_its_deadline_and_declares_the_dead_link() -> None:
    import time

    probes: list[float] = []
    monitor = LinkMonitor(last_received=lambda: 0.0, last_sent=lambda: 0.0, send_probe=lambda: probes.append(1),
                          ping_interval=0.05, ping_timeout=0.05, clock=time.monotonic)
    await monitor.run()  # returns once the link is dead: one probe, no answer
    assert probes == [1]
