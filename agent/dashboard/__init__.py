"""The dashboard: the touchscreen's web UI, served by the agent itself (docs/dashboard-protocol.md)."""

from agent.dashboard.server import Dashboard, DashboardStartError
from agent.dashboard.token import DashboardNotRunning, read_url

__all__ = ["Dashboard", "DashboardNotRunning", "DashboardStartError", "read_url"]
