"""The shadow stage's parts: the local request mirror (mirror.py), the load generator's users that check
every answer came from stable (users.py, a Locust file: never imported here) and the judge of the paired
answers (judge.py)."""

from pathlib import Path

MIRROR_FILE = Path(__file__).with_name("mirror.py")
USERS_FILE = Path(__file__).with_name("users.py")
STABLE_VERSION_VARIABLE = "SHADOW_STABLE_VERSION"
"""The stable version's card version, which users.py expects every answer to name."""
