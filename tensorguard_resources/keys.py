"""The key vault resource: one party's key provider, opened and checked at run start."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from tensorguard.errors import TensorGuardError
from tensorguard.keys import (
    MASTER_ENV,
    PROVIDER_ENV,
    KeyProvider,
    KeyProviderConfigError,
    KeyProviderProductionError,
    development_master,
    development_master_file,
    key_provider_from_env,
    party_environ,
    party_key_dir,
)
from tensorguard.production import KEY_PARTIES, is_production, party_variable
from tensorguard_resources.failures import fail_closed

__all__ = ["KeyVault", "party_environ", "party_key_vault"]


class KeyVault(ConfigurableResource):
    """One party's signing keys, KEM keys or federation secret, behind a KeyProvider.

    ``party`` is one of ``sites``, ``custodian``, ``release``: each has its own key
    directory (``key_dir``, from ``TG_KEY_DIR_<PARTY>``) and its own master
    (``TG_KEY_MASTER_<PARTY>``) or PKCS#11 token (``TG_PKCS11_TOKEN_LABEL_<PARTY>``,
    ``TG_PKCS11_PIN_<PARTY>``); see docs/KEYS.md. In development without the party's
    master, a development master is kept in ``dev_master_file`` and the run log says so
    loudly; production refuses to start without the party's own secret.
    """

    party: str
    key_dir: str
    dev_master_file: str
    _provider: KeyProvider | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Open the party's provider; refuse (without retries) when its secrets are missing."""
        try:
            if self.party not in KEY_PARTIES:
                raise KeyProviderConfigError(
                    f"key vault party {self.party!r} is unknown; use one of "
                    + ", ".join(KEY_PARTIES)
                )
            environ = party_environ(dict(os.environ), self.party, self.key_dir)
            master_env = party_variable(MASTER_ENV, self.party)
            uses_file_provider = environ.get(PROVIDER_ENV, "file") == "file"
            if uses_file_provider and MASTER_ENV not in environ:
                if is_production():
                    raise KeyProviderProductionError(
                        f"{master_env} is not set: production needs the {self.party} party's "
                        f"own key-encryption master; set {master_env} from that party's "
                        "secret manager (at least 32 characters, different from every other "
                        "party's master)"
                    )
                master, created = development_master(Path(self.dev_master_file))
                environ[MASTER_ENV] = master
                if context.log is not None:
                    verb = "created" if created else "using"
                    context.log.warning(
                        f"DEVELOPMENT KEYS ({self.party}): {verb} the development master "
                        f"{self.dev_master_file}; keys in {self.key_dir} are for demos only. "
                        f"Set {master_env} (and TG_ENVIRONMENT=production) for a real "
                        "federation."
                    )
            self._provider = key_provider_from_env(environ)
        except TensorGuardError as exc:
            raise fail_closed(exc, step=f"{self.party} key vault") from None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Close the provider (PKCS#11 sessions, cached key material)."""
        del context  # Dagster's resource hook signature
        if self._provider is not None:
            self._provider.close()
            self._provider = None

    @property
    def provider(self) -> KeyProvider:
        """The open key provider of this run."""
        if self._provider is None:
            raise RuntimeError("KeyVault used outside a run (setup_for_execution not called)")
        return self._provider

    @property
    def development(self) -> bool:
        """True when keys may be generated on demand (never in production)."""
        return not self.provider.production


def party_key_vault(party: str, state_dir: str, environ: dict[str, str] | None = None) -> KeyVault:
    """The vault of ``party``: ``TG_KEY_DIR_<PARTY>``, else ``<TG_KEY_DIR>/<party>``, else
    ``<state_dir>/keys/<party>``; the development master is ``<state_dir>/dev-secrets/
    <party>_master``. Nothing is opened here (secrets are read at run start)."""
    env = dict(os.environ) if environ is None else environ
    return KeyVault(
        party=party,
        key_dir=party_key_dir(party, state_dir, env),
        dev_master_file=development_master_file(party, state_dir),
    )
