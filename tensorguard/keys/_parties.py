"""Where each party's key vault lives and which settings open it (no Dagster).

One rule for every caller (the pipeline's ``KeyVault`` resources, ``tensorguard
preflight``): a party's key directory is ``TG_KEY_DIR_<PARTY>``; otherwise
``<TG_KEY_DIR>/<party>`` when ``TG_KEY_DIR`` is set; otherwise ``<state>/keys/<party>``,
where ``<state>`` is the directory above ``TG_ARTIFACT_ROOT`` (``.tensorguard`` by
default). See docs/KEYS.md, "Parties".
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tensorguard.keys._factory import (
    KEY_DIR_ENV,
    PKCS11_PIN_ENV,
    PKCS11_TOKEN_ENV,
    PKCS11_WRAP_KEY_ENV,
    state_dir,
)
from tensorguard.keys._master import MASTER_ENV
from tensorguard.production import party_variable

PARTY_OVERRIDES = (PKCS11_TOKEN_ENV, PKCS11_PIN_ENV, PKCS11_WRAP_KEY_ENV)
"""PKCS#11 settings a party may set for itself (``<NAME>_<PARTY>``, e.g. its own token);
production requires each party's own token (see :mod:`tensorguard.production`)."""


def party_key_dir(party: str, state: str, environ: Mapping[str, str]) -> str:
    """The key directory of ``party`` (see the module docstring for the rule);
    ``state`` is :func:`state_dir` of the deployment."""
    parent = environ.get(KEY_DIR_ENV) or os.path.join(state, "keys")
    return environ.get(party_variable(KEY_DIR_ENV, party)) or os.path.join(parent, party)


def development_master_file(party: str, state: str) -> str:
    """Where development keeps ``party``'s generated master (never used in production)."""
    return os.path.join(state, "dev-secrets", f"{party}_master")


def party_environ(environ: Mapping[str, str], party: str, key_dir: str) -> dict[str, str]:
    """The provider environment of ``party``: its own key dir, master and token settings.

    The shared ``TG_KEY_MASTER`` is removed, so a party never falls back to a master
    meant for everyone: only ``TG_KEY_MASTER_<PARTY>`` (or, in development, the party's
    development master) seals its keys. ``TG_PKCS11_*_<PARTY>`` override the shared
    PKCS#11 settings.
    """
    own = dict(environ)
    own[KEY_DIR_ENV] = key_dir
    own.pop(MASTER_ENV, None)
    for name in (MASTER_ENV, *PARTY_OVERRIDES):
        value = environ.get(party_variable(name, party), "")
        if value:
            own[name] = value
    return own


__all__ = [
    "PARTY_OVERRIDES",
    "development_master_file",
    "party_environ",
    "party_key_dir",
    "state_dir",
]
