"""The fleet identity resource: the CA directory and the service-certificate renewals."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from dagster import ConfigurableResource

from tensorguard.identity.inventory import EndpointCertificate, ca_inventory
from tensorguard.identity.renewal import RenewalOutcome
from tensorguard_resources.settings import resolved


class FleetIdentity(ConfigurableResource):
    """Where the fleet's certificates are described.

    ``ca_dir`` is the private CA's directory (``TG_IDENTITY_CA_DIR``): its index lists
    every node and service certificate it issued, and its signed audit log receives the
    renewal transitions. ``renewal_config`` (``TG_IDENTITY_RENEWAL_CONFIG``, may be
    empty) is the JSON file of ACME-managed service endpoints
    (:mod:`tensorguard.identity.renewal_plan`). ``expiry_warning_days``
    (``TG_IDENTITY_EXPIRY_WARNING_DAYS``) is when the expiry check starts failing.
    Renewal opens the CA operator's key provider from the same environment as
    ``tensorguard identity`` (``TG_KEY_PROVIDER``, ``TG_KEY_DIR``, ``TG_KEY_MASTER``).
    """

    ca_dir: str
    renewal_config: str = ""
    expiry_warning_days: float = 7.0

    def inventory(self, now: datetime) -> list[EndpointCertificate]:
        """Every node and service endpoint's certificate in force, soonest expiry first."""
        entries = ca_inventory(Path(resolved(self.ca_dir, "FleetIdentity.ca_dir")), now)
        if self.renewal_config:
            from tensorguard.identity.renewal_plan import acme_inventory, load_renewal_config

            entries += acme_inventory(load_renewal_config(Path(self.renewal_config)), now)
        return sorted(entries, key=lambda entry: (entry.not_after, entry.endpoint))

    def renew_due(self, now: datetime) -> list[RenewalOutcome]:
        """Run a renewal job for every due ACME endpoint; transitions go to the CA's log.

        Without a renewal configuration there is nothing to renew: no job runs (node
        certificates are renewed by re-enrolment, which the expiry check calls for).
        """
        if not self.renewal_config:
            return []
        from tensorguard.identity.authority import CertificateAuthority
        from tensorguard.identity.renewal import audit_recorder
        from tensorguard.identity.renewal_plan import load_renewal_config, run_due_renewals
        from tensorguard.keys import key_provider_from_env

        config = load_renewal_config(Path(self.renewal_config))
        with key_provider_from_env(os.environ, allow_ephemeral=False) as provider:
            authority = CertificateAuthority(Path(self.ca_dir), provider)
            return run_due_renewals(config, audit_recorder(authority), now, key_provider=provider)
