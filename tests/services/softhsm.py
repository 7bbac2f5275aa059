"""A throw-away SoftHSM2 token store for the tests: temp tokendir, real ``softhsm2-util``.

SoftHSM2 is a library, not a server: "starting" it means writing a configuration file
that points at a private token directory, exporting ``SOFTHSM2_CONF`` and initialising
tokens with ``softhsm2-util --init-token --free``. SoftHSM2 reads ``SOFTHSM2_CONF`` and
scans the token directory once, when the PKCS#11 module is first initialised in the
process, so every token a test session needs is created before the module is loaded, and
one configuration serves the whole process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.services.process import ServiceStartError, find_binary

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHSMToken:
    """One initialised token: what a PKCS#11 client needs to log in."""

    module_path: str
    label: str
    user_pin: str = field(repr=False)
    so_pin: str = field(repr=False)


@dataclass(frozen=True)
class SoftHSMStore:
    """The token directory and configuration shared by every token of a test session."""

    module_path: str
    conf_path: Path
    token_dir: Path
    tokens: dict[str, SoftHSMToken]

    def token(self, label: str) -> SoftHSMToken:
        """The token initialised under ``label``."""
        return self.tokens[label]


def find_softhsm_module() -> str:
    """Locate ``libsofthsm2.so`` (``SOFTHSM2_MODULE`` overrides the search)."""
    override = os.environ.get("SOFTHSM2_MODULE")
    candidates = (override,) if override else MODULE_CANDIDATES
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise ServiceStartError(
        "libsofthsm2.so not found (looked in "
        + ", ".join(c for c in candidates if c)
        + "); install the Debian package softhsm2 (`apt-get install -y softhsm2`)"
    )


def _init_token(util: str, env: dict[str, str], label: str) -> SoftHSMToken:
    user_pin = secrets.token_hex(8)
    so_pin = secrets.token_hex(8)
    result = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceStartError(
            f"softhsm2-util --init-token failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return SoftHSMToken(
        module_path=env["SOFTHSM2_MODULE_PATH"], label=label, user_pin=user_pin, so_pin=so_pin
    )


@contextmanager
def running_softhsm(work_dir: Path, labels: Sequence[str]) -> Iterator[SoftHSMStore]:
    """Create a private SoftHSM2 token store in ``work_dir`` with one token per label.

    ``SOFTHSM2_CONF`` is exported for the duration of the context (SoftHSM2 reads it when
    the module is initialised) and restored afterwards. The PINs are random per run.
    """
    util = find_binary("softhsm2-util")
    module_path = find_softhsm_module()
    token_dir = work_dir / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True)
    token_dir.chmod(0o700)
    conf_path = work_dir / "softhsm2.conf"
    conf_path.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf_path), "SOFTHSM2_MODULE_PATH": module_path}
    tokens = {label: _init_token(util, env, label) for label in labels}
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf_path)
    try:
        yield SoftHSMStore(
            module_path=module_path, conf_path=conf_path, token_dir=token_dir, tokens=tokens
        )
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
