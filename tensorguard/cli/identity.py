"""``tensorguard identity ...``: the fleet's private CA (operator side).

The CA's root and intermediate keys live in the key provider that ``TG_KEY_PROVIDER``
selects (sealed records, see docs/IDENTITY.md); the CA directory (``--ca-dir``) holds
only public material. ``issue`` reads a CSR file that a node made with
``tensorguard agent enrol`` and writes the certificate chain; it never sees a private key.

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``POLICY`` when the issuance policy
refuses a request, ``INPUT`` for an unusable CSR or CA directory, ``KEY_EXISTS`` when
``init`` finds the CA keys already in the provider. Handlers import the CA modules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tensorguard.cli.exit_codes import ExitCode, reporting_errors

if TYPE_CHECKING:
    from tensorguard.identity.authority import CertificateAuthority
    from tensorguard.keys import KeyProvider

REVOCATION_REASONS = (
    "unspecified",
    "key_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
)


def add_identity_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register the ``identity`` sub-commands; each sets ``args.handler``."""
    identity = subparsers.add_parser(
        "identity",
        help="fleet private CA: create it, issue node/service certificates, revoke",
        description="See docs/IDENTITY.md. CA keys come from TG_KEY_PROVIDER (docs/KEYS.md).",
    )
    commands = identity.add_subparsers(dest="identity_command", required=True)

    init = commands.add_parser("init", help="create the root and intermediate CA")
    _ca_dir(init)
    init.add_argument("--ca-name", default="fleet-ca", help="key-name prefix (default fleet-ca)")
    init.add_argument(
        "--trust-domain", help="namespace of node identities (spiffe://DOMAIN/node/ID)"
    )
    init.add_argument(
        "--service-name",
        action="append",
        default=[],
        help="allow-listed service DNS name, or *.suffix (repeatable)",
    )
    init.add_argument(
        "--service-ip",
        action="append",
        default=[],
        help="IP address a service certificate may name, e.g. a LAN broker (repeatable)",
    )
    init.add_argument("--max-days", type=int, help="maximum certificate lifetime (default 30)")
    init.set_defaults(handler=reporting_errors("identity init", _with_provider(_init)))

    issue = commands.add_parser("issue", help="issue a certificate from a CSR file")
    _ca_dir(issue)
    issue.add_argument("--csr", type=Path, required=True, help="the node's or service's CSR (PEM)")
    issue.add_argument("--profile", choices=("node", "service"), default="node")
    issue.add_argument("--days", type=int, help="lifetime in days (default: the policy maximum)")
    issue.add_argument(
        "--xwing-pub",
        type=Path,
        help="the node's <id>.xwing.pub from the same enrolment: must match the CSR's binding",
    )
    issue.add_argument(
        "--out", type=Path, required=True, help="certificate chain to write (leaf + intermediate)"
    )
    issue.set_defaults(handler=reporting_errors("identity issue", _with_ca(_issue)))

    revoke = commands.add_parser("revoke", help="revoke a serial and publish a new CRL")
    _ca_dir(revoke)
    revoke.add_argument("--serial", required=True, help="serial number in hex")
    revoke.add_argument("--reason", choices=REVOCATION_REASONS, default="unspecified")
    revoke.set_defaults(handler=reporting_errors("identity revoke", _with_ca(_revoke)))

    listing = commands.add_parser("list", help="issued certificates with days left")
    _ca_dir(listing)
    listing.add_argument(
        "--all", action="store_true", help="include revoked and expired certificates"
    )
    listing.set_defaults(handler=reporting_errors("identity list", _with_ca(_list)))

    check = commands.add_parser(
        "check", help="fail (exit 8) when an endpoint's certificate expires within N days"
    )
    _ca_dir(check)
    check.add_argument("--within-days", type=float, default=7.0, help="threshold (default 7)")
    check.add_argument(
        "--crl-within-days",
        type=float,
        default=1.0,
        help="also fail when a CRL's nextUpdate is this close (default 1)",
    )
    check.set_defaults(handler=reporting_errors("identity check", _with_ca(_check)))

    rotate = commands.add_parser(
        "rotate-intermediate",
        help="new issuing intermediate from the root; the old one stays valid for its leaves",
    )
    _ca_dir(rotate)
    rotate.add_argument("--days", type=int, default=365, help="lifetime (default 365)")
    rotate.set_defaults(handler=reporting_errors("identity rotate-intermediate", _with_ca(_rotate)))

    renew = commands.add_parser(
        "renew",
        help="renew due ACME service certificates: issue, deploy, verify (or roll back)",
    )
    _ca_dir(renew)
    renew.add_argument(
        "--config", type=Path, required=True, help="the renewal configuration (JSON)"
    )
    renew.add_argument("--endpoint", help="only this endpoint id")
    renew.add_argument(
        "--force", action="store_true", help="renew even when not within renew_within_days"
    )
    renew.set_defaults(handler=reporting_errors("identity renew", _with_ca(_renew)))

    crl = commands.add_parser("crl", help="re-sign the CRL with fresh dates")
    _ca_dir(crl)
    crl.set_defaults(handler=reporting_errors("identity crl", _with_ca(_crl)))


def _ca_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca-dir", type=Path, required=True, help="the CA directory")


def _with_provider(
    command: Callable[[argparse.Namespace, KeyProvider], dict[str, object]],
) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with the environment's key provider; print its result as JSON."""

    def handler(args: argparse.Namespace) -> int:
        from tensorguard.keys import key_provider_from_env

        with key_provider_from_env(os.environ, allow_ephemeral=False) as provider:
            result = command(args, provider)
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return ExitCode.OK

    return handler


def _with_ca(
    command: Callable[[argparse.Namespace, CertificateAuthority], dict[str, object]],
) -> Callable[[argparse.Namespace], int]:
    """Open the CA in ``--ca-dir`` with the environment's key provider, then run ``command``."""

    def with_provider(args: argparse.Namespace, provider: KeyProvider) -> dict[str, object]:
        from tensorguard.identity.authority import CertificateAuthority

        return command(args, CertificateAuthority(args.ca_dir, provider))

    return _with_provider(with_provider)


def _init(args: argparse.Namespace, provider: KeyProvider) -> dict[str, object]:
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding
    from pydantic import ValidationError

    from tensorguard.identity.authority import CertificateAuthority
    from tensorguard.identity.errors import IdentityConfigError
    from tensorguard.identity.policy import IssuancePolicy

    settings: dict[str, object] = {
        "service_dns_names": tuple(args.service_name),
        "service_ip_addresses": tuple(args.service_ip),
    }
    if args.trust_domain is not None:
        settings["trust_domain"] = args.trust_domain
    if args.max_days is not None:
        settings["max_lifetime_days"] = args.max_days
    try:
        policy = IssuancePolicy.model_validate(settings)
    except ValidationError as exc:
        messages = "; ".join(str(error["msg"]) for error in exc.errors())
        raise IdentityConfigError(f"invalid CA policy: {messages}") from None
    authority = CertificateAuthority.create(
        args.ca_dir, provider, policy=policy, ca_name=args.ca_name
    )
    return {
        "ca_dir": str(args.ca_dir),
        "root": str(authority.store.root_file),
        "ca_bundle": str(authority.store.bundle_file),
        "crl": str(authority.store.crl_file),
        "trust_domain": policy.trust_domain,
        "key_provider": provider.kind,
        "root_sha256": hashlib.sha256(authority.root.public_bytes(Encoding.DER)).hexdigest(),
        "audit_log": str(authority.store.audit_file),
        "audit_key_fingerprint": authority.audit_key.fingerprint(),
    }


def _issue(args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    from datetime import timedelta

    from cryptography.hazmat.primitives import serialization

    from tensorguard.durable import DestinationExistsError, atomic_write_bytes
    from tensorguard.identity.csr import csr_pem, read_csr, xwing_fingerprint
    from tensorguard.identity.errors import IdentityError
    from tensorguard.identity.policy import Profile
    from tensorguard.tgsp import load_recipient_public_key

    lifetime = None if args.days is None else timedelta(days=args.days)
    csr = read_csr(args.csr)
    xwing = None if args.xwing_pub is None else load_recipient_public_key(args.xwing_pub)
    certificate = authority.issue(
        csr_pem(csr), Profile(args.profile), lifetime=lifetime, xwing_public_key=xwing
    )
    chain = certificate.public_bytes(serialization.Encoding.PEM) + authority.chain_pem()
    try:
        atomic_write_bytes(args.out, chain, mode=0o644, overwrite=False)
    except DestinationExistsError as exc:
        raise IdentityError(f"certificate not written: {exc}") from exc
    return {
        "serial": f"{certificate.serial_number:x}",
        "subject": certificate.subject.rfc4514_string(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "certificate": str(args.out),
        "xwing_sha256": xwing_fingerprint(csr),
    }


def _revoke(args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    from cryptography import x509

    from tensorguard.identity.errors import RevocationError

    try:
        serial = int(args.serial, 16)
    except ValueError:
        raise RevocationError(f"serial {args.serial!r} is not hexadecimal") from None
    crl = authority.revoke(serial, x509.ReasonFlags[args.reason])
    return {
        "revoked": f"{serial:x}",
        "crl": str(authority.store.crl_file),
        "revoked_count": len(crl),
    }


def _list(args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    from tensorguard.identity.authority import utc_now

    now = utc_now()
    certificates = [
        {
            "serial": record.serial,
            "profile": record.profile.value,
            "endpoint": record.common_name,
            "not_after": record.not_after.isoformat(),
            "days_left": round(record.days_left(now), 2),
            "revoked": record.revoked_at is not None,
        }
        for record in sorted(authority.records(), key=lambda record: record.not_after)
        if args.all or record.is_current(now)
    ]
    return {"issuer": authority.intermediate.subject.rfc4514_string(), "certificates": certificates}


def _check(args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    from tensorguard.identity.authority import utc_now
    from tensorguard.identity.errors import CertificateExpiryError
    from tensorguard.identity.inventory import crls_due, endpoint_inventory, expiring_within

    now = utc_now()
    stale = crls_due(authority.published_crls(), now, args.crl_within_days)
    if stale:
        raise CertificateExpiryError(
            f"the CRL of {', '.join(stale)} expires within {args.crl_within_days} days or has "
            "expired, after which verifiers refuse every certificate it covers; run "
            "`tensorguard identity crl` and copy crl.pem to the verifiers"
        )
    inventory = endpoint_inventory(
        authority.records(), issuer=authority.intermediate.subject.rfc4514_string(), now=now
    )
    due = expiring_within(inventory, args.within_days)
    if due:
        listing = ", ".join(f"{e.profile.value} {e.endpoint} ({e.days_left} days)" for e in due)
        raise CertificateExpiryError(
            f"{len(due)} endpoint certificate(s) expire within {args.within_days} days or "
            f"have expired: {listing}; renew them (`tensorguard agent enrol` on the node, "
            "then `tensorguard identity issue`)"
        )
    return {"endpoints": len(inventory), "within_days": args.within_days, "expiring": 0}


def _rotate(args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    intermediate = authority.rotate_intermediate(intermediate_days=args.days)
    return {
        "generation": authority.generation,
        "intermediate": intermediate.subject.rfc4514_string(),
        "not_after": intermediate.not_valid_after_utc.isoformat(),
        "ca_bundle": str(authority.store.bundle_file),
        "crl": str(authority.store.crl_file),
    }


def _renew(args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    from tensorguard.identity.authority import utc_now
    from tensorguard.identity.errors import RenewalError
    from tensorguard.identity.renewal import RenewalState, audit_recorder
    from tensorguard.identity.renewal_plan import load_renewal_config, run_due_renewals

    config = load_renewal_config(args.config)
    outcomes = run_due_renewals(
        config,
        audit_recorder(authority),
        utc_now(),
        force=args.force,
        only=args.endpoint,
        key_provider=authority.provider,
    )
    result: dict[str, object] = {
        "renewals": [
            {
                "endpoint": outcome.endpoint_id,
                "job_id": outcome.job_id,
                "state": outcome.state.value,
                "attempts": outcome.attempts,
                "sha256": outcome.fingerprint,
                "previous_sha256": outcome.previous_fingerprint,
                "reason": outcome.reason,
            }
            for outcome in outcomes
        ]
    }
    unsuccessful = [o for o in outcomes if o.state is not RenewalState.SUCCEEDED]
    if unsuccessful:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        raise RenewalError(
            "; ".join(f"{o.endpoint_id}: {o.state.value}: {o.reason}" for o in unsuccessful)
            + f" (see the audit log {authority.store.audit_file})"
        )
    return result


def _crl(_args: argparse.Namespace, authority: CertificateAuthority) -> dict[str, object]:
    crl = authority.publish_crl()
    next_update = crl.next_update_utc
    return {
        "crl": str(authority.store.crl_file),
        "next_update": None if next_update is None else next_update.isoformat(),
        "revoked_count": len(crl),
    }


def add_agent_enrol_command(
    agent_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``agent enrol`` under the agent's sub-commands (node side of enrolment)."""
    enrol = agent_commands.add_parser(
        "enrol",
        help="make this node's keys here and a CSR for the fleet CA; install the certificate",
        description=(
            "Without --install-cert: create the node's TLS key (and its X-Wing key if it has "
            "none) in --node-dir and write only public files to --out: <id>.csr.pem for "
            "`tensorguard identity issue` and <id>.xwing.pub for the publisher. With "
            "--install-cert: check the returned chain against this node's key and the CA "
            "root (--ca-file) and install it. See docs/IDENTITY.md."
        ),
    )
    enrol.add_argument("--node-dir", type=Path, required=True, help="the node's private directory")
    enrol.add_argument("--node-id", help="this node's id (when requesting)")
    enrol.add_argument("--out", type=Path, help="outbox for the CSR and public key (requesting)")
    enrol.add_argument("--trust-domain", help="the CA's trust domain (default as the CA's)")
    enrol.add_argument("--key-type", choices=("ed25519", "ecdsa-p256"), default="ed25519")
    enrol.add_argument("--xwing-key", type=Path, help="the agent's existing X-Wing key file")
    enrol.add_argument("--install-cert", type=Path, help="certificate chain returned by the CA")
    enrol.add_argument("--ca-file", type=Path, help="the CA root (root.pem) to install with it")
    enrol.set_defaults(handler=reporting_errors("agent enrol", _enrol))


def _enrol(args: argparse.Namespace) -> int:
    from tensorguard.identity import enrol
    from tensorguard.identity.errors import EnrolmentError
    from tensorguard.identity.keytypes import KeyType
    from tensorguard.identity.policy import DEFAULT_TRUST_DOMAIN

    result: dict[str, object]
    if args.install_cert is not None:
        if args.ca_file is None:
            raise EnrolmentError("--install-cert needs --ca-file (the CA's root.pem)")
        installed = enrol.install_certificate(args.node_dir, args.install_cert, args.ca_file)
        result = {
            "node_id": installed.node_id,
            "serial": f"{installed.serial:x}",
            "not_after": installed.not_after.isoformat(),
            "mqtt": {
                "tls_cert_file": str(installed.tls_cert_file),
                "tls_key_file": str(installed.tls_key_file),
                "tls_ca_file": str(installed.tls_ca_file),
            },
        }
    else:
        if args.node_id is None or args.out is None:
            raise EnrolmentError("a request needs --node-id and --out (or use --install-cert)")
        request = enrol.enrol_node(
            args.node_dir,
            args.out,
            node_id=args.node_id,
            trust_domain=args.trust_domain or DEFAULT_TRUST_DOMAIN,
            key_type=KeyType(args.key_type),
            xwing_key_file=args.xwing_key,
        )
        result = {
            "node_id": request.node_id,
            "csr": str(request.csr_file),
            "xwing_public_key": str(request.xwing_public_key_file),
            "tls_key_generated": request.tls_key_generated,
            "xwing_key_generated": request.xwing_key_generated,
        }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK
