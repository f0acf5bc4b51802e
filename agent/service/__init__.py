"""Running as a systemd service: sd_notify, the agent's health, the watchdog, ``headunit status``."""

from agent.service.health import Health, Problem, status_handlers
from agent.service.notify import Notifier, watchdog_interval

__all__ = ["Health", "Notifier", "Problem", "status_handlers", "watchdog_interval"]
