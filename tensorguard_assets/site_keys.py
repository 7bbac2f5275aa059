"""Sites' keys as the other parties see them: public files only, never a vault.

A site's secrets (its composite signing key, its X-Wing key, its pair secrets) live in
the sites' vault (``site_keys``). The aggregator and the custodian trust only public
keys: the site registry's ``public_key`` / ``kem_public_key`` files, or in development,
where sites are not registered with key files, the public keys each site publishes
under ``<artifact root>/site-public-keys/`` when it first creates them. Production
ignores published files: a key that cannot be traced to a registration is not trusted.
"""

# No "from __future__ import annotations": kept consistent with the asset modules.

from contextlib import suppress
from pathlib import Path

from tensorguard.artifact_layout import SITE_PUBLIC_KEYS_DIR as SITE_PUBLIC_KEYS_DIR
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, XWingPublicKey
from tensorguard.federation import FederationError
from tensorguard.keys import KeyExistsError, KeyPurpose
from tensorguard.tgsp import (
    KeyFileError,
    load_recipient_public_key,
    load_verify_key,
    write_key_file,
)
from tensorguard_resources import SiteRegistry
from tensorguard_resources.keys import KeyVault

SIGNING_SUFFIX = ".pub"
KEM_SUFFIX = ".kem.pub"
PublicKey = CompositeVerifyKey | XWingPublicKey


def site_key_name(site_id: str) -> str:
    """Name of a site's composite signing key in the sites' vault."""
    return f"site-{site_id}"


def site_kem_key_name(site_id: str) -> str:
    """Name of a site's X-Wing key (pairwise masks) in the sites' vault."""
    return f"site-{site_id}-kem"


def published_key_path(public_dir: Path, site_id: str, *, kem: bool = False) -> Path:
    """Where a site publishes its public signing key (or, with ``kem``, its X-Wing key)."""
    return public_dir / f"{site_id}{KEM_SUFFIX if kem else SIGNING_SUFFIX}"


def publish_public_key(path: Path, key: PublicKey) -> None:
    """Write a public key file once; a file already there must hold the same key.

    A different key under the site's name means the site's vault was replaced since it
    published; that is refused rather than silently re-trusted.
    """
    if path.is_file():
        loaded: PublicKey = (
            load_recipient_public_key(path)
            if path.name.endswith(KEM_SUFFIX)
            else load_verify_key(path)
        )
        if loaded.fingerprint() != key.fingerprint():
            raise FederationError(
                f"the published key {path} differs from the site's key in its vault; if the "
                "site's keys were rotated on purpose, remove the old file (and re-register "
                "the site) before the next round"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_key_file(path, key)
    except KeyFileError:
        if not path.is_file():
            raise
        publish_public_key(path, key)  # another run of the site published first: compare


def site_signer(vault: KeyVault, public_dir: Path, site_id: str) -> CompositeSigner:
    """The site's signer from the sites' vault; development creates it on first use and
    publishes its public key."""
    signer = vault.provider.signer_for(
        site_key_name(site_id), generate_if_missing=vault.development
    )
    if vault.development:
        publish_public_key(published_key_path(public_dir, site_id), signer.public_key())
    return signer


def publish_development_kem_key(vault: KeyVault, public_dir: Path, site_id: str) -> None:
    """Development: make sure ``site_id`` has an X-Wing key in the sites' vault (created on
    first use, as a site would at enrolment) and that its public half is published."""
    name = site_kem_key_name(site_id)
    if not vault.provider.has_key(name, KeyPurpose.KEM):
        with suppress(KeyExistsError):  # another site's run created it at the same moment
            vault.provider.generate_kem_key(name)
    public = vault.provider.kem_private_key(name).public_key()
    publish_public_key(published_key_path(public_dir, site_id, kem=True), public)


def registered_site_keys(
    sites: SiteRegistry, public_dir: Path, *, production: bool
) -> dict[str, CompositeVerifyKey]:
    """Each registered site's public signing key, from public files only.

    The registry's ``public_key`` file is authoritative. Without one, development uses
    the key the site published (a site that never produced an update has published none
    yet and simply contributes nothing); production refuses, since the aggregator must
    never trust a key it cannot trace to the site's registration.
    """
    registered: dict[str, CompositeVerifyKey] = {}
    for site_id, record in sites.sites().items():
        if record.public_key_path is not None:
            registered[site_id] = load_verify_key(record.public_key_path)
        elif production:
            raise FederationError(
                f"site {site_id!r} has no public_key in the site registry; production "
                "aggregation only trusts registered site keys (add public_key: <file>)"
            )
        else:
            published = published_key_path(public_dir, site_id)
            if published.is_file():
                registered[site_id] = load_verify_key(published)
    return registered


def roster_kem_keys(
    sites: SiteRegistry, public_dir: Path, roster: tuple[str, ...], *, production: bool
) -> dict[str, XWingPublicKey]:
    """Each roster site's X-Wing public key: the registry's ``kem_public_key`` file, or in
    development the key the site published."""
    kem_keys: dict[str, XWingPublicKey] = {}
    for site_id in roster:
        record = sites.site(site_id)
        published = published_key_path(public_dir, site_id, kem=True)
        if record.kem_public_key_path is not None:
            kem_keys[site_id] = load_recipient_public_key(record.kem_public_key_path)
        elif not production and published.is_file():
            kem_keys[site_id] = load_recipient_public_key(published)
        else:
            raise FederationError(
                f"site {site_id!r} has no kem_public_key in the site registry; masked rounds "
                "need every site's X-Wing public key (tensorguard keys generate --kem, then "
                "add kem_public_key: <file> to its entry)"
            )
    return kem_keys
