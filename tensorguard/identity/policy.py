"""The issuance policy: what the fleet CA signs, decided from a verified CSR.

Two profiles, never mixed:

* **node** (edge nodes, MQTT clients): exactly one subject alternative name, the URI
  ``spiffe://<trust domain>/node/<node id>``; the subject is exactly ``CN=<node id>``
  (Mosquitto's ``use_identity_as_username`` makes it the MQTT username); EKU
  ``clientAuth`` only.
* **service** (broker, fleet API): one or more DNS names, each on the policy's
  allow-list (an exact name, or ``*.suffix`` for exactly one more label), or IP
  addresses on ``service_ip_addresses``; the subject is ``CN=<first name>``; EKU
  ``serverAuth`` only.

For both: the key type must be allowed, the lifetime must not exceed
``max_lifetime_days``, and the CSR may carry no extension other than the SAN (a request
for ``basicConstraints``, a key usage or an EKU is refused, never silently rewritten).
:func:`decide` returns an :class:`Approval` or raises :class:`IssuancePolicyError`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tensorguard.identity.errors import IssuancePolicyError
from tensorguard.identity.keytypes import KeyType, describe_key, key_type_of

DEFAULT_MAX_LIFETIME_DAYS = 30
DEFAULT_TRUST_DOMAIN = "fleet.tensorguard.internal"
NODE_PATH = "/node/"
NODE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Node ids as in :mod:`tensorguard.fleet.names`: one MQTT topic level and one file name."""
_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
DNS_NAME_PATTERN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})+")


class Profile(StrEnum):
    """What a certificate is for; each profile has its own SAN rule and EKU."""

    NODE = "node"
    SERVICE = "service"


PROFILE_EKU = {
    Profile.NODE: ExtendedKeyUsageOID.CLIENT_AUTH,
    Profile.SERVICE: ExtendedKeyUsageOID.SERVER_AUTH,
}


def node_uri(trust_domain: str, node_id: str) -> str:
    """The URI SAN that names ``node_id`` in ``trust_domain``."""
    return f"spiffe://{trust_domain}{NODE_PATH}{node_id}"


def _dns_name(value: str, what: str) -> str:
    if DNS_NAME_PATTERN.fullmatch(value) is None or len(value) > 253:
        raise ValueError(f"{what} {value!r} is not a lower-case DNS name with at least two labels")
    return value


class IssuancePolicy(BaseModel):
    """The CA's rules, fixed when the CA is created and stored beside it (policy.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trust_domain: str = Field(
        default=DEFAULT_TRUST_DOMAIN,
        description="DNS-style namespace of node identities (the URI SAN's authority).",
    )
    allowed_key_types: Annotated[tuple[KeyType, ...], Field(min_length=1)] = (
        KeyType.ED25519,
        KeyType.ECDSA_P256,
    )
    max_lifetime_days: Annotated[int, Field(ge=1, le=398)] = DEFAULT_MAX_LIFETIME_DAYS
    service_dns_names: tuple[str, ...] = Field(
        default=(),
        description="Allow-list for service certificates: exact names or '*.suffix'.",
    )
    service_ip_addresses: tuple[str, ...] = Field(
        default=(),
        description="IP addresses a service certificate may name (e.g. a broker on a LAN).",
    )
    crl_validity_days: Annotated[int, Field(ge=1, le=90)] = 7

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain_is_dns(cls, value: str) -> str:
        return _dns_name(value, "trust domain")

    @field_validator("service_dns_names")
    @classmethod
    def _allow_list_is_dns(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            _dns_name(name.removeprefix("*."), "allow-listed service name")
        return names

    @field_validator("service_ip_addresses")
    @classmethod
    def _allow_list_is_ip(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_address(address)) for address in addresses)

    def allows_service_name(self, name: str) -> bool:
        """True when ``name`` is an exact allow-list entry or matches one ``*.suffix``."""
        for entry in self.service_dns_names:
            if entry == name:
                return True
            if entry.startswith("*."):
                label, _, rest = name.partition(".")
                if rest == entry[2:] and label and "*" not in label:
                    return True
        return False


@dataclass(frozen=True)
class Approval:
    """What the CA will put in the certificate, after every rule passed."""

    profile: Profile
    subject: x509.Name
    names: tuple[x509.GeneralName, ...]
    lifetime: timedelta
    key_type: KeyType

    @property
    def common_name(self) -> str:
        """The subject's common name (the node id, or the first DNS name)."""
        return str(self.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _requested_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    extensions = list(csr.extensions)
    others = [
        ext.oid.dotted_string
        for ext in extensions
        if ext.oid != ExtensionOID.SUBJECT_ALTERNATIVE_NAME
    ]
    if others:
        raise IssuancePolicyError(
            f"the request carries extensions the CA does not accept from a requester "
            f"({', '.join(others)}); the CA sets key usage, EKU and basic constraints itself "
            "from the profile — send a CSR with only a subjectAltName"
        )
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IssuancePolicyError(
            "the request has no subjectAltName; a node names itself with the URI "
            "spiffe://<trust domain>/node/<node id>, a service with its DNS names"
        ) from None
    return list(san)


def _subject_common_name(csr: x509.CertificateSigningRequest) -> str:
    attributes = list(csr.subject)
    if len(attributes) != 1 or attributes[0].oid != NameOID.COMMON_NAME:
        raise IssuancePolicyError(
            "the request's subject must be exactly one common name, not "
            f"{csr.subject.rfc4514_string()!r}"
        )
    return str(attributes[0].value)


def _node_names(
    policy: IssuancePolicy, csr: x509.CertificateSigningRequest
) -> tuple[x509.Name, tuple[x509.GeneralName, ...]]:
    names = _requested_names(csr)
    prefix = f"spiffe://{policy.trust_domain}{NODE_PATH}"
    if len(names) != 1 or not isinstance(names[0], x509.UniformResourceIdentifier):
        raise IssuancePolicyError(
            "a node certificate names exactly one identity, the URI "
            f"{prefix}<node id>; the request asks for {[str(n.value) for n in names]}"
        )
    uri = names[0].value
    node_id = uri.removeprefix(prefix)
    if not uri.startswith(prefix) or NODE_ID_PATTERN.fullmatch(node_id) is None:
        raise IssuancePolicyError(
            f"node identity {uri!r} is outside this CA's namespace: use {prefix}<node id> "
            "with a node id of 1-64 characters a-z 0-9 . _ - starting with a letter or digit"
        )
    common_name = _subject_common_name(csr)
    if common_name != node_id:
        raise IssuancePolicyError(
            f"the request's common name {common_name!r} is not its node id {node_id!r}; the "
            "broker takes the common name as the MQTT username, so they must be equal"
        )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    return subject, (x509.UniformResourceIdentifier(uri),)


def _service_names(
    policy: IssuancePolicy, csr: x509.CertificateSigningRequest
) -> tuple[x509.Name, tuple[x509.GeneralName, ...]]:
    names = _requested_names(csr)
    other = [str(n.value) for n in names if not isinstance(n, x509.DNSName | x509.IPAddress)]
    if not names or other:
        raise IssuancePolicyError(
            "a service certificate names only DNS names (and allow-listed IP addresses); "
            f"refused: {other or 'no names'}"
        )
    texts = [str(n.value) for n in names]
    refused = [
        text
        for name, text in zip(names, texts, strict=True)
        if not (
            policy.allows_service_name(text)
            if isinstance(name, x509.DNSName)
            else text in policy.service_ip_addresses
        )
    ]
    if refused:
        raise IssuancePolicyError(
            f"service name(s) {refused} are not on the CA's allow-list "
            f"{[*policy.service_dns_names, *policy.service_ip_addresses]}; add them to the "
            "policy or request other names"
        )
    if len(set(texts)) != len(texts):
        raise IssuancePolicyError(f"the request lists a name twice: {texts}")
    _subject_common_name(csr)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, texts[0])])
    return subject, tuple(names)


def decide(
    policy: IssuancePolicy,
    csr: x509.CertificateSigningRequest,
    profile: Profile,
    lifetime: timedelta | None = None,
) -> Approval:
    """Apply every rule of ``policy`` to the (signature-checked) ``csr`` for ``profile``.

    ``lifetime`` defaults to the policy's maximum. Raises :class:`IssuancePolicyError`
    naming the first rule the request breaks.
    """
    public_key = csr.public_key()
    key_type = key_type_of(public_key)
    if key_type is None or key_type not in policy.allowed_key_types:
        raise IssuancePolicyError(
            f"key type {describe_key(public_key)} is not allowed; this CA issues for "
            f"{[t.value for t in policy.allowed_key_types]} keys — generate one of those"
        )
    maximum = timedelta(days=policy.max_lifetime_days)
    lifetime = maximum if lifetime is None else lifetime
    if lifetime <= timedelta(0) or lifetime > maximum:
        raise IssuancePolicyError(
            f"requested lifetime {lifetime} is outside (0, {policy.max_lifetime_days} days]; "
            "certificates are short-lived and renewed, ask for at most the maximum"
        )
    if profile is Profile.NODE:
        subject, names = _node_names(policy, csr)
    else:
        subject, names = _service_names(policy, csr)
    return Approval(profile, subject, names, lifetime, key_type)
