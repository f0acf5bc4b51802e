"""Commands that reach the driver: ``message-driver``, and the driver's confirmation as an interlock."""

from __future__ import annotations

import math

from agent.cabin.errors import CabinError
from agent.cabin.prompts import DriverPrompts
from agent.commands.forms import Field
from agent.commands.registry import Command, CommandContext, Handler, Result

MAX_MESSAGE = 500  # characters an operator may send the driver at once
DRIVER_TIMEOUT = 30.0  # s the driver has to answer by default


def message_driver_command(prompts: DriverPrompts) -> Command:
    """``message-driver``: show a message on the dashboard, optionally waiting for an acknowledgement."""
    return Command(
        "message-driver", "Message the driver", (
            Field("text", "Message", "text", required=True, min=1, max=MAX_MESSAGE,
                  description=f"Shown on the car's dashboard (at most {MAX_MESSAGE} characters)."),
            Field("ack", "Acknowledgement required", "bool", default=False,
                  description="You get a chat message when the driver has acknowledged it."),
        ), _message_driver(prompts),
        description="Shows a message to the driver; with an acknowledgement required, "
                    "you are told by chat message when they have read it.")


def _message_driver(prompts: DriverPrompts) -> Handler:
    async def handler(ctx: CommandContext) -> Result:
        text = ctx.values.get("text")
        if not isinstance(text, str):  # the form requires it; kept for a caller that skips the form
            return Result("No message: nothing was shown.", ok=False)
        ack = ctx.values.get("ack") is True
        try:
            notice = await prompts.notify(ctx.bare, text, ack)
        except CabinError as exc:
            return Result(f"Not shown: {exc}.", ok=False)
        rows = (("Message", str(notice.id)),
                ("Acknowledgement", "waiting for the driver" if ack else "not asked for"))
        if ack:
            return Result(f"Shown to the driver as message {notice.id}; waiting for their acknowledgement "
                          "(you get a chat message when they acknowledge it).", rows)
        return Result(f"Shown to the driver as message {notice.id}.", rows)

    return handler


class DriverConfirms:
    """An asking interlock: the driver accepts the command on the dashboard within ``timeout`` seconds.

    It is asked last (after every plain interlock agreed), and no answer counts as a refusal.
    """

    def __init__(self, prompts: DriverPrompts, timeout: float = DRIVER_TIMEOUT) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"the driver's timeout must be positive, not {timeout}")
        self.prompts = prompts
        self.timeout = timeout

    @property
    def name(self) -> str:
        return "driver confirms on the dashboard"

    async def ask(self, requester: str, command: Command) -> str | None:
        """Put the command's title to the driver on behalf of ``requester``; None if they accept."""
        question = command.title.rstrip(" ?") + "?"
        return await self.prompts.confirm(question, requester, self.timeout)
