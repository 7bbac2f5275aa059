"""The round coordinator's key: it signs each round spec; every other step verifies it.

The coordinator (the organisation that opens rounds and publishes releases) keeps its
signing key ``round-coordinator`` in the publisher's vault (``release_keys``). Sites, the
aggregator and the custodian verify a round's spec under the coordinator's public key
before they act on it, so no party can change a round rule (a weight cap, the clip
norm, the quorum) after the round opened. Production pins that key with
``TG_COORDINATOR_PUBLIC_KEY`` (a file from ``tensorguard keys show --public-out``);
development publishes it as ``<artifact root>/coordinator.pub`` when the first round
opens.
"""

# No "from __future__ import annotations": kept consistent with the asset modules.

import os
from pathlib import Path

from tensorguard.artifact_layout import PUBLISHED_COORDINATOR_KEY
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey
from tensorguard.federation import FederationError
from tensorguard.tgsp import load_verify_key
from tensorguard_assets.site_keys import publish_public_key
from tensorguard_resources.keys import KeyVault

COORDINATOR_KEY_NAME = "round-coordinator"
COORDINATOR_PUBLIC_KEY_ENV = "TG_COORDINATOR_PUBLIC_KEY"


def coordinator_signer(vault: KeyVault, artifact_root: Path) -> CompositeSigner:
    """The coordinator's signer; development creates it on first use and publishes it."""
    signer = vault.provider.signer_for(COORDINATOR_KEY_NAME, generate_if_missing=vault.development)
    if vault.development:
        publish_public_key(artifact_root / PUBLISHED_COORDINATOR_KEY, signer.public_key())
    return signer


def coordinator_key(artifact_root: Path, *, production: bool) -> CompositeVerifyKey:
    """The coordinator's public key: pinned by ``TG_COORDINATOR_PUBLIC_KEY``, or in
    development the key the coordinator published."""
    pinned = os.environ.get(COORDINATOR_PUBLIC_KEY_ENV, "")
    if pinned:
        return load_verify_key(Path(pinned))
    published = artifact_root / PUBLISHED_COORDINATOR_KEY
    if production or not published.is_file():
        raise FederationError(
            f"no coordinator key to verify the round spec with: set "
            f"{COORDINATOR_PUBLIC_KEY_ENV} to the coordinator's public key file (tensorguard "
            f"keys show --name {COORDINATOR_KEY_NAME} --public-out <file>)"
            + ("" if production else f", or open a round first (it publishes {published})")
        )
    return load_verify_key(published)
