"""Everything a running fleet service shares between requests, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

from tensorguard.fleet.db import FleetDatabase
from tensorguard.service.approvals import ApprovalStore
from tensorguard.service.connectors import ConnectorStore
from tensorguard.service.credential_seal import CredentialSeal
from tensorguard.service.node_auth import NodeAuthenticator
from tensorguard.service.node_certificates import NodeCertificateVerifier
from tensorguard.service.nodes import NodeDirectory
from tensorguard.service.packages import PackageStore
from tensorguard.service.rate_limit import TokenBucketLimiter
from tensorguard.service.revocations import TokenRevocations
from tensorguard.service.safety import SafetyEvaluationStore
from tensorguard.service.settings import ServiceSettings
from tensorguard.service.telemetry import TelemetryStore


@dataclass(frozen=True)
class ServiceContext:
    """Settings, database, the registry, and the stores and guards built on them."""

    settings: ServiceSettings
    database: FleetDatabase
    nodes: NodeDirectory
    telemetry: TelemetryStore
    node_authenticator: NodeAuthenticator
    limiter: TokenBucketLimiter
    revocations: TokenRevocations
    packages: PackageStore
    safety: SafetyEvaluationStore
    connectors: ConnectorStore
    approvals: ApprovalStore
    node_certificates: NodeCertificateVerifier | None = None

    @classmethod
    def create(cls, settings: ServiceSettings) -> ServiceContext:
        """Open the database (lazily: nothing connects yet) and build the stores; load
        the client CA bundle and CRL when node certificates are configured."""
        database = FleetDatabase(settings.database_url)
        tls = settings.tls
        node_certificates = None
        if tls.client_ca_file is not None and tls.crl_file is not None:
            node_certificates = NodeCertificateVerifier(tls.client_ca_file, tls.crl_file)
        return cls(
            settings=settings,
            database=database,
            nodes=NodeDirectory(database),
            telemetry=TelemetryStore(database, settings.telemetry_window_s),
            node_authenticator=NodeAuthenticator(database, settings.signature_window_s),
            limiter=TokenBucketLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
            revocations=TokenRevocations(database, settings.token_leeway_s),
            packages=PackageStore(settings.registry_root),
            safety=SafetyEvaluationStore(database),
            connectors=ConnectorStore(
                database, CredentialSeal(settings.secret_key.get_secret_value().encode())
            ),
            approvals=ApprovalStore(database),
            node_certificates=node_certificates,
        )
