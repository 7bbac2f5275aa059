"""Names shared by MQTT topics and file paths: fleets, channels and node ids.

Each name becomes one MQTT topic level and one path component, so it must be
non-empty, contain no ``/``, ``+``, ``#`` or NUL, and not be ``.`` or ``..``. The
allowed alphabet is deliberately small and matches TGSP channel names: lower-case
ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most
64 characters.
"""

from __future__ import annotations

import re

from tensorguard.fleet.errors import FleetNameError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid ``kind`` name (fleet, channel, node id), else raise."""
    if not NAME_PATTERN.fullmatch(value):
        raise FleetNameError(
            f"{kind} name {value!r} is invalid: use 1-64 lower-case ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (it becomes an MQTT topic "
            "level and a file name)"
        )
    return value
