"""ACME issuance (HTTP-01 with the project's responder, DNS-01 through a configured
provider) against a real Pebble started by the session fixture."""

from __future__ import annotations

import datetime
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import requests
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tensorguard.identity.acme_issuer import (
    MAX_RETRY_AFTER_S,
    AcmeIssuanceError,
    AcmeIssuer,
    AcmeSettings,
    ChallengeType,
    CommandDnsProvider,
    _problem_error,
    error_retry_after,
    load_or_create_provider_account_key,
)
from tensorguard.identity.acme_responder import Http01Responder
from tensorguard.identity.errors import IdentityConfigError
from tensorguard.keys import KeyPurpose
from tests.identity.conftest import new_provider, service_csr
from tests.services.pebble import PebbleServer
from tests.services.process import free_port

NAME = "broker.fleet.test"


def settings(pebble: PebbleServer, tmp_path: Path, **overrides: object) -> AcmeSettings:
    """Settings for the test Pebble: its API CA trusted for this client only."""
    values: dict[str, object] = {
        "directory_url": pebble.directory_url,
        "account_key_file": tmp_path / "acme" / "account.key",
        "ca_bundle": pebble.api_ca_file,
        "http01_port": pebble.http01_port,
        "timeout_s": 30.0,
    }
    values.update(overrides)
    return AcmeSettings(**values)  # type: ignore[arg-type]


def verify_with_openssl(pebble: PebbleServer, chain: bytes, tmp_path: Path) -> None:
    """`openssl verify` the leaf against Pebble's issuing root, the chain's rest untrusted."""
    leaf, *intermediates = x509.load_pem_x509_certificates(chain)
    assert intermediates, "the chain carries its intermediate"
    files = {"root": pebble.issuing_roots(), "leaf": leaf.public_bytes(Encoding.PEM)}
    files["rest"] = b"".join(cert.public_bytes(Encoding.PEM) for cert in intermediates)
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    done = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "rest.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_http01_issues_a_chain_that_verifies(pebble_server: PebbleServer, tmp_path: Path) -> None:
    issuer = AcmeIssuer(settings(pebble_server, tmp_path))
    seen: list[list[str]] = []
    chain = issuer.issue(service_csr(NAME), on_challenge=seen.append)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [NAME]
    assert seen == [[NAME]]  # a challenge was really answered (authorisation reuse is off)
    verify_with_openssl(pebble_server, chain, tmp_path)
    assert (tmp_path / "acme" / "account.key").stat().st_mode & 0o077 == 0
    # The same account key finds its existing account and issues again.
    assert AcmeIssuer(settings(pebble_server, tmp_path)).issue(service_csr(NAME))


def test_validation_fails_when_the_responder_is_not_where_pebble_looks(
    pebble_server: PebbleServer, tmp_path: Path
) -> None:
    issuer = AcmeIssuer(settings(pebble_server, tmp_path, http01_port=free_port()))
    with pytest.raises(AcmeIssuanceError, match="validation failed") as caught:
        issuer.issue(service_csr(NAME))
    assert caught.value.retryable


def test_the_acme_servers_tls_is_not_trusted_without_its_ca(
    pebble_server: PebbleServer, tmp_path: Path
) -> None:
    issuer = AcmeIssuer(settings(pebble_server, tmp_path, ca_bundle=None))
    with pytest.raises(AcmeIssuanceError, match=r"SSLError|certificate verify failed"):
        issuer.issue(service_csr(NAME))


def test_dns01_without_a_provider_is_refused_with_a_remedy(tmp_path: Path) -> None:
    unreachable = AcmeSettings(
        directory_url="https://127.0.0.1:9/dir",
        account_key_file=tmp_path / "account.key",
        challenge=ChallengeType.DNS01,
    )
    with pytest.raises(AcmeIssuanceError, match="no DNS provider is configured") as caught:
        AcmeIssuer(unreachable)
    assert not caught.value.retryable
    assert "http-01" in str(caught.value)
    assert "dns_hook" in str(caught.value)


def test_dns01_through_a_configured_provider(pebble_server: PebbleServer, tmp_path: Path) -> None:
    hook = tmp_path / "dns-hook.py"
    hook.write_text(
        textwrap.dedent(
            f"""
            import json, sys, urllib.request
            action, record, value = sys.argv[1:]
            path = "/set-txt" if action == "set" else "/clear-txt"
            body = {{"host": record + "."}}
            if action == "set":
                body["value"] = value
            urllib.request.urlopen(urllib.request.Request(
                "{pebble_server.dns_management_url}" + path, data=json.dumps(body).encode()))
            with open({str(tmp_path / "hook.log")!r}, "a") as log:
                log.write(action + " " + record + "\\n")
            """
        )
    )
    provider = CommandDnsProvider((sys.executable, str(hook)))
    issuer = AcmeIssuer(
        settings(pebble_server, tmp_path, challenge=ChallengeType.DNS01), dns_provider=provider
    )
    chain = issuer.issue(service_csr(NAME))
    assert x509.load_pem_x509_certificates(chain)[0].subject.rfc4514_string() == f"CN={NAME}"
    record = f"_acme-challenge.{NAME}"
    assert (tmp_path / "hook.log").read_text().split("\n")[:2] == [
        f"set {record}",
        f"clear {record}",
    ]


def test_dns01_provider_failure_is_an_issuance_error(
    pebble_server: PebbleServer, tmp_path: Path
) -> None:
    provider = CommandDnsProvider((sys.executable, "-c", "import sys; sys.exit('zone locked')"))
    issuer = AcmeIssuer(
        settings(pebble_server, tmp_path, challenge=ChallengeType.DNS01), dns_provider=provider
    )
    with pytest.raises(AcmeIssuanceError, match=r"exited 1 on set .*zone locked"):
        issuer.issue(service_csr(NAME))


def test_responder_serves_only_registered_tokens() -> None:
    with Http01Responder(port=0) as responder:
        base = f"http://127.0.0.1:{responder.port}/.well-known/acme-challenge/"
        responder.add("tok-1", "tok-1.thumbprint")
        with urllib.request.urlopen(base + "tok-1") as reply:
            assert reply.read() == b"tok-1.thumbprint"
        for path in ("tok-2", "", "../tok-1", "tok-1/x"):
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(base + path)
            assert caught.value.code == 404
        responder.remove("tok-1")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "tok-1")
        with pytest.raises(Exception, match="not base64url"):
            responder.add("../etc", "x")


def test_a_refused_order_is_final_and_asks_for_no_wait(
    pebble_server: PebbleServer, tmp_path: Path
) -> None:
    """A real problem document from Pebble (an illegal name): not retryable, and no wait
    invented where the server sent no Retry-After."""
    issuer = AcmeIssuer(settings(pebble_server, tmp_path))
    with pytest.raises(AcmeIssuanceError, match=r"\(malformed\).*illegal character") as caught:
        issuer.issue(service_csr("bad_name.fleet.test"))
    assert not caught.value.retryable
    assert caught.value.retry_after is None


def _response(status: int, retry_after: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (429, "120", 120.0),
        (503, "Wed, 02 Dec 2026 12:10:00 GMT", 600.0),  # an HTTP date, 10 min after NOW
        (429, "Wed, 02 Dec 2026 11:00:00 GMT", 0.0),  # already past: no negative wait
        (429, None, None),
        (429, "soon", None),
        (200, "120", None),  # only error responses ask for a wait
    ],
    ids=["seconds", "http-date", "past-date", "absent", "unreadable", "success"],
)
def test_the_retry_after_of_an_error_response(
    status: int, header: str | None, expected: float | None
) -> None:
    now = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
    assert error_retry_after(_response(status, header), now=now) == expected


def test_a_rate_limit_carries_its_wait_and_a_long_one_ends_the_job() -> None:
    limited = messages.Error.with_code("rateLimited", detail="too many new orders")
    short = _problem_error(limited, retry_after=120.0)
    assert (short.retryable, short.retry_after) == (True, 120.0)
    long = _problem_error(limited, retry_after=MAX_RETRY_AFTER_S + 1)
    assert not long.retryable
    assert "the next scheduled renewal tries again" in str(long)
    final = _problem_error(messages.Error.with_code("badCSR"), retry_after=5.0)
    assert (final.retryable, final.retry_after) == (False, 5.0)


def test_the_account_key_can_live_in_the_key_provider(
    pebble_server: PebbleServer, tmp_path: Path
) -> None:
    """account_key_name: the account key is made and sealed in the key provider, an order
    is issued with it, and no file anywhere holds it in the clear."""
    provider = new_provider(tmp_path / "keys")
    acme = AcmeSettings(
        directory_url=pebble_server.directory_url,
        account_key_name="acme-account",
        ca_bundle=pebble_server.api_ca_file,
        http01_port=pebble_server.http01_port,
        timeout_s=30.0,
    )
    chain = AcmeIssuer(acme, key_provider=provider).issue(service_csr(NAME))
    verify_with_openssl(pebble_server, chain, tmp_path)
    assert provider.has_key("acme-account", KeyPurpose.GENERIC)
    first = load_or_create_provider_account_key(provider, "acme-account")
    assert load_or_create_provider_account_key(provider, "acme-account").thumbprint() == (
        first.thumbprint()
    )  # found again, not made anew
    private = first.key._wrapped  # the cryptography key inside josepy's wrapper
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (scalar, scalar.hex().encode(), der):
                assert secret not in data, f"{path} holds the account key in the clear"
    with pytest.raises(IdentityConfigError, match="none was given"):
        AcmeIssuer(acme)
    with pytest.raises(IdentityConfigError, match="exactly one of account_key_file"):
        AcmeSettings(directory_url=pebble_server.directory_url)
