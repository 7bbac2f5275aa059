"""The key vault resource: the run's key provider, opened and checked at run start."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from tensorguard.errors import TensorGuardError
from tensorguard.keys.development import development_master
from tensorguard.keys.factory import key_provider_from_env
from tensorguard.keys.provider import KeyProvider
from tensorguard.production import is_production
from tensorguard_resources.failures import fail_closed


class KeyVault(ConfigurableResource):
    """Signing keys, KEM keys and the federation secret, behind a KeyProvider.

    The provider comes from ``TG_KEY_PROVIDER`` (file, pkcs11, kms) and its variables
    (see docs/KEYS.md). ``key_dir`` is the default for ``TG_KEY_DIR``. In development
    without ``TG_KEY_MASTER``, a development master is kept in ``dev_master_file`` and
    the run log says so loudly; production refuses to start without real secrets.
    """

    key_dir: str
    dev_master_file: str
    _provider: KeyProvider | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Open the provider; refuse (without retries) when its secrets are missing."""
        environ = dict(os.environ)
        environ.setdefault("TG_KEY_DIR", self.key_dir)
        try:
            uses_file_provider = environ.get("TG_KEY_PROVIDER", "file") == "file"
            if uses_file_provider and not environ.get("TG_KEY_MASTER") and not is_production():
                master, created = development_master(Path(self.dev_master_file))
                environ["TG_KEY_MASTER"] = master
                if context.log is not None:
                    verb = "created" if created else "using"
                    context.log.warning(
                        f"DEVELOPMENT KEYS: {verb} the development master "
                        f"{self.dev_master_file}; keys in {environ['TG_KEY_DIR']} are for "
                        "demos only. Set TG_KEY_MASTER (and TG_ENVIRONMENT=production) for "
                        "a real federation."
                    )
            self._provider = key_provider_from_env(environ)
        except TensorGuardError as exc:
            raise fail_closed(exc, step="key vault") from None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Close the provider (PKCS#11 sessions, cached key material)."""
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
