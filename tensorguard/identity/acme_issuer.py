"""ACME (RFC 8555) issuance of service certificates, with certbot's ``acme`` library.

:class:`AcmeIssuer` registers (or finds) the account of its account key, opens an order
for a CSR, proves control of every name, finalises the order and returns the PEM chain.
Challenges:

* **HTTP-01**: answered by :class:`~tensorguard.identity.acme_responder.Http01Responder`,
  the project's own loopback HTTP server, started for the order only;
* **DNS-01**: only through a configured :class:`DnsProvider` (e.g.
  :class:`CommandDnsProvider`, an operator's script that edits the zone). Without one,
  DNS-01 is refused before anything is sent, with what to configure instead.

Failures are :class:`AcmeIssuanceError`: ``retryable`` tells a renewal job whether to try
again (server, network or validation trouble) or stop (configuration), and
``retry_after`` carries the ``Retry-After`` of the error response (e.g. ``rateLimited``,
503), read with a ``requests`` response hook on the ``acme`` client's session because
the library's problem objects do not keep the response. Nothing here
imports Dagster; the ``acme`` extra must be installed (``pip install tensorguard[acme]``).
"""

from __future__ import annotations

import datetime
import email.utils
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tensorguard.durable import atomic_write_bytes, ensure_directory
from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.identity.acme_responder import Http01Responder
from tensorguard.identity.errors import IdentityConfigError, IdentityError
from tensorguard.keys import KeyProvider, KeyPurpose

try:
    import josepy
    import requests
    from acme import challenges, client, errors, messages
    from josepy.jwa import ES256
    from josepy.jwk import JWKEC
except ImportError as missing:  # the base install (an edge node) has no ACME client
    raise IdentityConfigError(
        f"ACME needs the acme extra ({missing.name} is not installed): "
        "pip install 'tensorguard[acme]' (make bootstrap installs it with the pipeline)"
    ) from missing

USER_AGENT = "tensorguard-acme"
DNS_HOOK_TIMEOUT_S = 120
MAX_RETRY_AFTER_S = 3600.0
"""The longest server-requested wait a renewal job sleeps through; a longer one ends the
job (not retryable), and the next scheduled renewal tries again."""


def error_retry_after(
    response: requests.Response, now: datetime.datetime | None = None
) -> float | None:
    """Seconds an error response's ``Retry-After`` asks to wait (delta-seconds or an
    HTTP date; never negative), or None for a success, no header or an unreadable one."""
    if response.status_code < 400:
        return None
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    moment = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (when - moment).total_seconds())


class _ErrorRetryAfter:
    """A ``requests`` response hook keeping the ``Retry-After`` of the latest response
    (None unless it was an error that asked for a wait)."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def __call__(
        self, response: requests.Response, *_args: object, **_kwargs: object
    ) -> requests.Response:
        self.seconds = error_retry_after(response)
        return response


class AcmeIssuanceError(IdentityError):
    """An ACME order failed. ``retryable`` is False when retrying cannot help
    (refused configuration, an account the server rejects); ``retry_after`` is the wait
    in seconds the server asked for in the failing response's ``Retry-After`` (None when
    it sent none)."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class DnsProviderMissingError(AcmeIssuanceError, ConfigurationError):
    """DNS-01 was asked for, but no DNS provider is configured to publish the records."""


class ChallengeType(StrEnum):
    """How the ACME server checks that we control a name."""

    HTTP01 = "http-01"
    DNS01 = "dns-01"


class DnsProvider(Protocol):
    """Publishes and withdraws the ``_acme-challenge`` TXT records of DNS-01."""

    def set_txt(self, record_name: str, value: str) -> None:
        """Publish TXT ``value`` at ``record_name`` (and wait until it is served)."""

    def clear_txt(self, record_name: str, value: str) -> None:
        """Withdraw TXT ``value`` from ``record_name``."""


@dataclass(frozen=True)
class CommandDnsProvider:
    """A DNS provider that is an operator's program: it is run as
    ``<argv...> set <record-name> <value>`` and ``<argv...> clear <record-name> <value>``
    and must exit 0 once the record is published (or withdrawn)."""

    argv: tuple[str, ...]

    def set_txt(self, record_name: str, value: str) -> None:
        """Run the program with ``set``."""
        self._run("set", record_name, value)

    def clear_txt(self, record_name: str, value: str) -> None:
        """Run the program with ``clear``."""
        self._run("clear", record_name, value)

    def _run(self, action: str, record_name: str, value: str) -> None:
        try:
            done = subprocess.run(
                [*self.argv, action, record_name, value],
                capture_output=True,
                text=True,
                timeout=DNS_HOOK_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AcmeIssuanceError(
                f"the DNS-01 provider {self.argv[0]} could not {action} {record_name}: {exc}"
            ) from exc
        if done.returncode != 0:
            raise AcmeIssuanceError(
                f"the DNS-01 provider {self.argv[0]} exited {done.returncode} on {action} "
                f"{record_name}: {done.stderr.strip()[-300:]}"
            )


@dataclass(frozen=True)
class AcmeSettings:
    """Where the ACME server is and how to answer it.

    ``ca_bundle`` is the PEM file trusted for the ACME server's own TLS (None: the
    system's store); the account's P-256 key is either ``account_key_file`` (made on
    first use, mode 0600) or ``account_key_name``, a record sealed in the key provider
    (made there on first use; exactly one of the two); ``http01_host``/``http01_port`` is
    where the responder listens.
    """

    directory_url: str
    account_key_file: Path | None = None
    contact_email: str | None = None
    ca_bundle: Path | None = None
    challenge: ChallengeType = ChallengeType.HTTP01
    http01_host: str = "127.0.0.1"
    http01_port: int = 80
    timeout_s: float = 90.0
    account_key_name: str | None = None

    def __post_init__(self) -> None:
        """Refuse settings naming no account key or two."""
        if (self.account_key_file is None) == (self.account_key_name is None):
            raise IdentityConfigError(
                "set exactly one of account_key_file (a P-256 key file, 0600) and "
                "account_key_name (the account key sealed in the key provider)"
            )


def load_or_create_account_key(path: Path) -> JWKEC:
    """The ACME account key in ``path`` (PKCS#8 PEM), made there on first use."""
    if not path.exists():
        ensure_directory(path.parent, mode=0o700)
        pem = _new_account_key(serialization.Encoding.PEM)
        atomic_write_bytes(path, pem, mode=0o600, overwrite=False)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise IdentityConfigError(
            f"the ACME account key {path} cannot be read ({type(exc).__name__}); restore it "
            "or remove it to register a new account"
        ) from exc
    return _account_jwk(loaded, str(path))


def _new_account_key(encoding: serialization.Encoding) -> bytes:
    """A fresh P-256 account key, PKCS#8 in ``encoding``."""
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _account_jwk(loaded: object, where: str) -> JWKEC:
    """``loaded`` as the account's JWK; refuse anything but an ECDSA P-256 private key."""
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise IdentityConfigError(f"the ACME account key {where} is not an ECDSA P-256 key")
    return JWKEC(key=loaded)


def load_or_create_provider_account_key(provider: KeyProvider, name: str) -> JWKEC:
    """The ACME account key sealed in ``provider`` as generic secret ``name`` (PKCS#8
    DER), made and sealed there on first use; it is unsealed only into this process."""
    try:
        if not provider.has_key(name, KeyPurpose.GENERIC):
            der = _new_account_key(serialization.Encoding.DER)
            provider.store_secret(name, KeyPurpose.GENERIC, der)
        sealed = provider.load_secret(name, KeyPurpose.GENERIC)
    except TensorGuardError as exc:
        raise IdentityConfigError(
            f"the ACME account key {name!r} cannot be read from the key provider: {exc}"
        ) from exc
    try:
        loaded = serialization.load_der_private_key(sealed, password=None)
    except ValueError:
        raise IdentityConfigError(
            f"the key provider's record {name!r} is not an ACME account key (PKCS#8); "
            "choose another account_key_name"
        ) from None
    return _account_jwk(loaded, repr(name))


class AcmeIssuer:
    """Obtains certificates from one ACME directory with one account."""

    def __init__(
        self,
        settings: AcmeSettings,
        dns_provider: DnsProvider | None = None,
        key_provider: KeyProvider | None = None,
    ) -> None:
        """Refuses DNS-01 without a provider before any request is made; an
        ``account_key_name`` needs ``key_provider`` (the key is sealed there)."""
        if settings.challenge is ChallengeType.DNS01 and dns_provider is None:
            raise DnsProviderMissingError(
                "DNS-01 was requested but no DNS provider is configured, so the "
                "_acme-challenge TXT records cannot be published. Configure one (a program "
                "run as `<program> set|clear <record> <value>`: acme.dns_hook in the renewal "
                "configuration) or use HTTP-01 with the built-in responder "
                "(challenge: http-01, http01_port reachable from the ACME server)",
                retryable=False,
            )
        self.settings = settings
        self.dns_provider = dns_provider
        if settings.account_key_name is not None:
            if key_provider is None:
                raise IdentityConfigError(
                    f"the ACME account key {settings.account_key_name!r} is kept in the key "
                    "provider, but none was given; configure TG_KEY_PROVIDER (docs/KEYS.md)"
                )
            self._account_key = load_or_create_provider_account_key(
                key_provider, settings.account_key_name
            )
        else:
            assert settings.account_key_file is not None  # AcmeSettings checks one is set
            self._account_key = load_or_create_account_key(settings.account_key_file)

    def issue(
        self, csr_pem: bytes, on_challenge: Callable[[list[str]], None] | None = None
    ) -> bytes:
        """Order a certificate for ``csr_pem``'s names; return the PEM chain (leaf first).

        ``on_challenge`` is called with the names being validated, just before the
        challenges are answered.
        """
        waits = _ErrorRetryAfter()
        try:
            acme_client = self._client(waits)
            order = acme_client.new_order(csr_pem)
            pending = [
                authz
                for authz in order.authorizations
                if authz.body.status != messages.STATUS_VALID
            ]
            names = [authz.body.identifier.value for authz in pending]
            if on_challenge is not None:
                on_challenge(names)
            # acme compares naive local times.
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.settings.timeout_s)
            if self.settings.challenge is ChallengeType.HTTP01:
                order = self._answer_http01(acme_client, order, pending, deadline)
            else:
                order = self._answer_dns01(acme_client, order, pending, deadline)
        except AcmeIssuanceError:
            raise
        except errors.ValidationError as exc:
            problems = "; ".join(
                f"{authz.body.identifier.value}: {chall.error.detail if chall.error else '?'}"
                for authz in exc.failed_authzrs
                for chall in authz.body.challenges
                if chall.error is not None
            )
            raise AcmeIssuanceError(f"ACME validation failed: {problems}") from exc
        except messages.Error as exc:
            raise _problem_error(exc, waits.seconds) from exc
        except errors.TimeoutError as exc:
            raise AcmeIssuanceError(
                f"the ACME order did not complete within {self.settings.timeout_s:g}s"
            ) from exc
        except (errors.Error, requests.RequestException, josepy.errors.Error) as exc:
            raise _waiting_error(
                f"ACME request to {self.settings.directory_url} failed: {type(exc).__name__}: "
                f"{str(exc)[:300]}",
                retryable=True,
                retry_after=waits.seconds,
            ) from exc
        if not order.fullchain_pem:
            raise AcmeIssuanceError("the ACME server finalised the order without a certificate")
        return order.fullchain_pem.encode("ascii")

    def _client(self, waits: _ErrorRetryAfter) -> client.ClientV2:
        net = client.ClientNetwork(
            self._account_key,
            alg=ES256,
            # requests takes a CA bundle path where acme's annotation says bool.
            verify_ssl=cast(
                bool, str(self.settings.ca_bundle) if self.settings.ca_bundle else True
            ),
            user_agent=USER_AGENT,
        )
        net.session.hooks["response"].append(waits)
        directory = client.ClientV2.get_directory(self.settings.directory_url, net)
        acme_client = client.ClientV2(directory, net)
        contact = (f"mailto:{self.settings.contact_email}",) if self.settings.contact_email else ()
        registration = messages.NewRegistration(contact=contact, terms_of_service_agreed=True)
        try:
            acme_client.new_account(registration)
        except errors.ConflictError as existing:
            net.account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
        return acme_client

    def _answer_http01(
        self,
        acme_client: client.ClientV2,
        order: messages.OrderResource,
        pending: Sequence[messages.AuthorizationResource],
        deadline: datetime.datetime,
    ) -> messages.OrderResource:
        with Http01Responder(self.settings.http01_host, self.settings.http01_port) as responder:
            for authz in pending:
                challenge = _challenge_of(authz, challenges.HTTP01)
                response, validation = challenge.response_and_validation(self._account_key)
                responder.add(challenge.chall.encode("token"), validation)
                acme_client.answer_challenge(challenge, response)
            return acme_client.poll_and_finalize(order, deadline)

    def _answer_dns01(
        self,
        acme_client: client.ClientV2,
        order: messages.OrderResource,
        pending: Sequence[messages.AuthorizationResource],
        deadline: datetime.datetime,
    ) -> messages.OrderResource:
        provider = self.dns_provider
        assert provider is not None  # refused in __init__
        published: list[tuple[str, str]] = []
        try:
            answers = []
            for authz in pending:
                challenge = _challenge_of(authz, challenges.DNS01)
                domain = authz.body.identifier.value.removeprefix("*.")
                record = challenge.chall.validation_domain_name(domain)
                value = challenge.chall.validation(self._account_key)
                provider.set_txt(record, value)
                published.append((record, value))
                answers.append((challenge, challenge.response(self._account_key)))
            for challenge, response in answers:
                acme_client.answer_challenge(challenge, response)
            return acme_client.poll_and_finalize(order, deadline)
        finally:
            for record, value in published:
                provider.clear_txt(record, value)


def _challenge_of(
    authz: messages.AuthorizationResource, kind: type[challenges.Challenge]
) -> messages.ChallengeBody:
    for challenge in authz.body.challenges:
        if isinstance(challenge.chall, kind):
            return challenge
    offered = ", ".join(str(challenge.chall.typ) for challenge in authz.body.challenges)
    raise AcmeIssuanceError(
        f"the ACME server offers no {kind.typ} challenge for {authz.body.identifier.value} "
        f"(offered: {offered}); configure a challenge type it offers",
        retryable=False,
    )


def _waiting_error(
    message: str, *, retryable: bool, retry_after: float | None
) -> AcmeIssuanceError:
    """The error, with the server's requested wait; a wait over :data:`MAX_RETRY_AFTER_S`
    is not sat through (not retryable: the next scheduled run tries again)."""
    if retryable and retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
        return AcmeIssuanceError(
            f"{message}; the server asks to wait {retry_after:.0f}s before retrying, longer "
            f"than {MAX_RETRY_AFTER_S:.0f}s: stopping here, the next scheduled renewal "
            "tries again",
            retryable=False,
            retry_after=retry_after,
        )
    return AcmeIssuanceError(message, retryable=retryable, retry_after=retry_after)


def _problem_error(problem: messages.Error, retry_after: float | None = None) -> AcmeIssuanceError:
    """An ACME problem document as an error; account/policy refusals are not retryable;
    ``retry_after`` is the wait the error response asked for."""
    code = str(problem.code or problem.typ)
    final = code in {
        "unauthorized",
        "rejectedIdentifier",
        "unsupportedIdentifier",
        "caa",
        "badCSR",
        "accountDoesNotExist",
        "externalAccountRequired",
        "userActionRequired",
        "malformed",
    }
    return _waiting_error(
        f"the ACME server refused the request ({code}): {problem.detail or problem.title or ''}",
        retryable=not final,
        retry_after=retry_after,
    )
