"""Which service certificates are renewed, how, and when: the renewal configuration.

A JSON file (``TG_IDENTITY_RENEWAL_CONFIG`` for the Dagster job, ``--config`` for
``tensorguard identity renew``) names the ACME server and the endpoints::

    {
      "acme": {"directory_url": "https://acme.example/dir",
               "account_key_file": "/var/lib/tensorguard/acme/account.key",
               "challenge": "http-01", "http01_port": 80},
      "renew_within_days": 10,
      "retry": {"max_attempts": 3, "initial_delay_s": 30},
      "endpoints": [
        {"endpoint_id": "mqtt-broker", "names": ["broker.fleet.example"],
         "cert_file": "/etc/mosquitto/broker.crt", "key_file": "/etc/mosquitto/broker.key",
         "host": "127.0.0.1", "port": 8883,
         "reload": {"signal_pid_file": "/run/mosquitto/mosquitto.pid"}}
      ]
    }

``acme`` takes exactly one of ``account_key_file`` and ``account_key_name`` (the account
key sealed in the CA operator's key provider, made there on first use). ``reload`` is
either ``signal_pid_file`` (SIGHUP) or ``command`` (argv). DNS-01 needs
``acme.dns_hook`` (argv of a program run as ``<argv> set|clear <record> <value>``).
An endpoint is due when its installed certificate is missing, unreadable or expires
within ``renew_within_days``. :func:`run_due_renewals` runs one
:class:`~tensorguard.identity.renewal.RenewalJob` per due endpoint.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tensorguard.codec import CodecError, parse_json_object
from tensorguard.identity.acme_issuer import (
    AcmeIssuer,
    AcmeSettings,
    ChallengeType,
    CommandDnsProvider,
)
from tensorguard.identity.deploy import CertificateFiles, CommandReload, Reload, SignalReload
from tensorguard.identity.errors import IdentityConfigError
from tensorguard.identity.inventory import EndpointCertificate
from tensorguard.identity.policy import Profile
from tensorguard.identity.renewal import (
    Recorder,
    RenewalJob,
    RenewalOutcome,
    RetryPolicy,
    ServiceEndpoint,
)
from tensorguard.keys import KeyProvider

MAX_CONFIG_BYTES = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AcmeConfig(_Strict):
    """The ACME server and the challenge used."""

    directory_url: str = Field(pattern=r"^https://")
    account_key_file: Path | None = None
    account_key_name: str | None = None  # sealed in the CA operator's key provider instead
    contact_email: str | None = None
    ca_bundle: Path | None = None
    challenge: Literal["http-01", "dns-01"] = "http-01"
    http01_host: str = "0.0.0.0"  # noqa: S104 (the ACME server validates from outside)
    http01_port: int = Field(default=80, ge=1, le=65535)
    dns_hook: tuple[str, ...] | None = None
    timeout_s: float = Field(default=90.0, gt=0)

    @model_validator(mode="after")
    def _one_account_key(self) -> AcmeConfig:
        if (self.account_key_file is None) == (self.account_key_name is None):
            raise ValueError(
                "set exactly one of account_key_file (a key file, 0600) and account_key_name "
                "(the account key sealed in the key provider)"
            )
        return self


class ReloadConfig(_Strict):
    """How a service is told to load its new certificate: one of the two."""

    signal_pid_file: Path | None = None
    command: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReloadConfig:
        if (self.signal_pid_file is None) == (not self.command):
            raise ValueError("reload needs exactly one of signal_pid_file or command")
        return self

    def action(self) -> Reload:
        """The reload action."""
        if self.signal_pid_file is not None:
            return SignalReload(self.signal_pid_file)
        assert self.command
        return CommandReload(self.command)


class EndpointConfig(_Strict):
    """One TLS service endpoint."""

    endpoint_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    names: tuple[str, ...] = Field(min_length=1)
    cert_file: Path
    key_file: Path
    host: str
    port: int = Field(ge=1, le=65535)
    reload: ReloadConfig
    verify_timeout_s: float = Field(default=15.0, gt=0)

    def endpoint(self) -> ServiceEndpoint:
        """The endpoint for a renewal job."""
        return ServiceEndpoint(
            self.endpoint_id,
            self.names,
            CertificateFiles(self.cert_file, self.key_file),
            self.host,
            self.port,
            self.verify_timeout_s,
        )


class RetryConfig(_Strict):
    """The retry policy (see :class:`~tensorguard.identity.renewal.RetryPolicy`)."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    initial_delay_s: float = Field(default=30.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_delay_s: float = Field(default=900.0, ge=0)


class RenewalConfig(_Strict):
    """The whole renewal configuration."""

    acme: AcmeConfig
    endpoints: tuple[EndpointConfig, ...]
    renew_within_days: float = Field(default=10.0, gt=0)
    retry: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> RenewalConfig:
        ids = [endpoint.endpoint_id for endpoint in self.endpoints]
        if len(ids) != len(set(ids)):
            raise ValueError("endpoint ids must be unique")
        return self

    def issuer(self, key_provider: KeyProvider | None = None) -> AcmeIssuer:
        """The ACME client (refuses DNS-01 without ``dns_hook``); ``key_provider`` holds
        the account key when the configuration names ``account_key_name``."""
        acme = self.acme
        settings = AcmeSettings(
            directory_url=acme.directory_url,
            account_key_file=acme.account_key_file,
            account_key_name=acme.account_key_name,
            contact_email=acme.contact_email,
            ca_bundle=acme.ca_bundle,
            challenge=ChallengeType(acme.challenge),
            http01_host=acme.http01_host,
            http01_port=acme.http01_port,
            timeout_s=acme.timeout_s,
        )
        provider = CommandDnsProvider(acme.dns_hook) if acme.dns_hook else None
        return AcmeIssuer(settings, dns_provider=provider, key_provider=key_provider)

    def retry_policy(self) -> RetryPolicy:
        """The retry policy."""
        return RetryPolicy(**self.retry.model_dump())


def load_renewal_config(path: Path) -> RenewalConfig:
    """Read and validate the renewal configuration at ``path``."""
    try:
        data = path.read_bytes()
        if len(data) > MAX_CONFIG_BYTES:
            raise IdentityConfigError(f"renewal configuration {path} is larger than 1 MiB")
        return RenewalConfig.model_validate(parse_json_object(data, what=str(path)))
    except OSError as exc:
        raise IdentityConfigError(
            f"cannot read the renewal configuration {path}: {exc.strerror}; create it "
            "(docs/IDENTITY.md, 'Renewal') or point TG_IDENTITY_RENEWAL_CONFIG at it"
        ) from exc
    except (CodecError, ValidationError) as exc:
        raise IdentityConfigError(f"renewal configuration {path} is invalid: {exc}") from exc


def installed_certificate(endpoint: EndpointConfig) -> x509.Certificate | None:
    """The leaf the endpoint's certificate file holds (None: missing or unreadable)."""
    try:
        return x509.load_pem_x509_certificates(endpoint.cert_file.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None


def acme_inventory(config: RenewalConfig, now: datetime) -> list[EndpointCertificate]:
    """Each configured endpoint's installed certificate (issuer, serial, expiry).

    An endpoint without a readable certificate is a :class:`IdentityConfigError`: a
    service that should serve TLS and has nothing to serve is an outage, not a row.
    """
    entries = []
    for endpoint in config.endpoints:
        leaf = installed_certificate(endpoint)
        if leaf is None:
            raise IdentityConfigError(
                f"endpoint {endpoint.endpoint_id}: no readable certificate in "
                f"{endpoint.cert_file}; run `tensorguard identity renew --config ... "
                f"--endpoint {endpoint.endpoint_id}`"
            )
        entries.append(
            EndpointCertificate(
                endpoint=endpoint.endpoint_id,
                profile=Profile.SERVICE,
                serial=f"{leaf.serial_number:x}",
                issuer=leaf.issuer.rfc4514_string(),
                not_after=leaf.not_valid_after_utc,
                days_left=round((leaf.not_valid_after_utc - now).total_seconds() / 86400, 2),
                source="acme",
            )
        )
    return entries


def is_due(endpoint: EndpointConfig, now: datetime, within_days: float) -> bool:
    """True when the endpoint has no readable certificate or it expires within the window."""
    leaf = installed_certificate(endpoint)
    if leaf is None:
        return True
    return (leaf.not_valid_after_utc - now).total_seconds() <= within_days * 86400


def run_due_renewals(
    config: RenewalConfig,
    recorder: Recorder,
    now: datetime,
    *,
    force: bool = False,
    only: str | None = None,
    key_provider: KeyProvider | None = None,
) -> list[RenewalOutcome]:
    """Renew every due endpoint (every one with ``force``; only ``only`` when given);
    ``key_provider`` holds the ACME account key named by ``account_key_name``."""
    chosen = [e for e in config.endpoints if only is None or e.endpoint_id == only]
    if only is not None and not chosen:
        raise IdentityConfigError(f"no endpoint {only!r} in the renewal configuration")
    due = [e for e in chosen if force or is_due(e, now, config.renew_within_days)]
    if not due:
        return []
    issuer, retry = config.issuer(key_provider), config.retry_policy()
    return [
        RenewalJob(
            endpoint.endpoint(), issuer, endpoint.reload.action(), recorder, retry=retry
        ).run()
        for endpoint in due
    ]
