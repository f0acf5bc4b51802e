"""The cabin: what the driver is told (operators' messages) and asked (confirmations of vehicle actions)."""

from agent.cabin.errors import AlreadyAnswered, CabinError, EmptyPrompt, NoAcknowledgement, PromptNotFound
from agent.cabin.notices import Notice
from agent.cabin.offers import Offer, Offers
from agent.cabin.prompts import (Confirmation, DriverPrompts, Pending, PromptEvent, acknowledgement_sender,
                                 acknowledgement_text)

__all__ = ["AlreadyAnswered", "CabinError", "Confirmation", "DriverPrompts", "EmptyPrompt", "NoAcknowledgement",
           "Notice", "Offer", "Offers", "Pending", "PromptEvent", "PromptNotFound", "acknowledgement_sender", "acknowledgement_text"]
