"""The local control socket: JSON lines on a UNIX socket, one door to the driver's API.

:mod:`agent.control.server` is the socket (server and the CLI's client),
:mod:`agent.control.handlers` the commands it answers.
"""

from agent.control.server import (SOCKET_NAME, AgentNotRunning, ControlClient, ControlError, ControlStartError,
                                  ControlServer, Handler, socket_path)

__all__ = ["SOCKET_NAME", "AgentNotRunning", "ControlClient", "ControlError", "ControlServer",
           "ControlStartError", "Handler", "socket_path"]
