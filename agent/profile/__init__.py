"""Vehicle profiles: the validated TOML file that says what this car has and how it shows.

``load_profile`` reads and validates one; the dataclasses it returns are in
``agent.profile.model``.
"""

from agent.profile.loader import OBD_DEFAULT_PATHS, load_profile
from agent.profile.model import Profile

__all__ = ["OBD_DEFAULT_PATHS", "Profile", "load_profile"]
