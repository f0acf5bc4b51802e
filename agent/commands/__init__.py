"""Remote commands for fleet operators: registry, forms, interlocks, rate limit and audit trail."""

from agent.commands.audit import AuditEntry, AuditLog, Decision
from agent.commands.forms import Field, FieldValue, FormView
from agent.commands.registry import (AgentFacade, Command, CommandContext, Dispatcher, Interlock, ModeIs,
                                     RateLimiter, Refused, Registry, Reply, Result, SpeedIsZero)

__all__ = ["AgentFacade", "AuditEntry", "AuditLog", "Command", "CommandContext", "Decision", "Dispatcher",
           "Field", "FieldValue", "FormView", "Interlock", "ModeIs", "RateLimiter", "Refused", "Registry",
           "Reply", "Result", "SpeedIsZero"]
