"""``tensorguard serve`` (the fleet service under uvicorn) and ``tensorguard token``.

``serve`` reads its settings from the environment (:mod:`tensorguard.service.settings`),
optionally migrates the application database, refuses a database whose schema is not
current, and serves until SIGINT/SIGTERM: over HTTPS with ``TG_TLS_CERT_FILE`` and
``TG_TLS_KEY_FILE`` (SIGHUP loads a renewed certificate and key), asking for node client
certificates with ``TG_TLS_CLIENT_CA_FILE`` (:mod:`tensorguard.service.tls_settings`).
``token`` prints a short-lived operator, evaluator or auditor token signed with
``TG_SECRET_KEY``.

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK`` after a clean stop; ``CONFIG``
when the settings are refused (production without ``TG_SECRET_KEY`` of at least 32
bytes or ``DATABASE_URL``, ``TG_DEMO_MODE`` in production, node routes without mutual
TLS in production unless ``TG_NODE_AUTH=signature``, TLS files that do not load, a bad
``TG_*`` value, or
``token`` without ``TG_SECRET_KEY``); ``ERROR`` when the database is unreachable or not
migrated. FastAPI, uvicorn and PyJWT (the ``service`` extra) are imported by the
handlers, not by this module.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorguard.cli.exit_codes import ExitCode, reporting_errors

if TYPE_CHECKING:
    from tensorguard.service.tls_settings import TlsSettings

ROLES = ("operator", "evaluator", "auditor")


def add_serve_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``serve`` and ``token``; each sets ``args.handler``."""
    serve = subparsers.add_parser(
        "serve",
        help="run the fleet service (HTTP API for edge nodes and operators)",
        description="Settings come from TG_* variables and DATABASE_URL; see docs/FLEET.md.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="TCP port (8080)")
    serve.add_argument(
        "--database-url", default=None, help="application DB URL (overrides DATABASE_URL)"
    )
    serve.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade the application DB schema to the newest revision before serving",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument(
        "--pid-file",
        type=Path,
        default=None,
        help="write the process id here while serving (for SIGHUP reloads of the TLS "
        "certificate, e.g. a renewal endpoint's signal_pid_file); removed at exit",
    )
    serve.set_defaults(handler=reporting_errors("serve", _serve))

    token = subparsers.add_parser(
        "token",
        help="print a short-lived fleet service token signed with TG_SECRET_KEY",
        description="The token authenticates operators, evaluators and auditors to "
        "`tensorguard serve`; it expires after --ttl seconds.",
    )
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--subject", required=True, help="who holds the token, e.g. alice")
    token.add_argument("--ttl", type=int, default=900, help="lifetime in seconds (900)")
    token.set_defaults(handler=reporting_errors("token", _token))


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn
    from sqlalchemy.engine import make_url

    from tensorguard.durable import atomic_write_bytes
    from tensorguard.fleet.db import FleetDatabase, migrate
    from tensorguard.fleet.errors import FleetDatabaseError
    from tensorguard.service.app import create_app
    from tensorguard.service.errors import ServiceError
    from tensorguard.service.settings import load_settings

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = load_settings(database_url=args.database_url)
    tls_options = _tls_options(settings.tls)  # TLS files that do not load: refused first
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    if args.migrate:
        migrate(settings.database_url)
    database = FleetDatabase(settings.database_url)
    try:
        database.require_current_schema()
    except FleetDatabaseError as exc:
        raise ServiceError(f"{exc}; or start with `tensorguard serve --migrate`") from None
    finally:
        database.close()
    app = create_app(settings)
    if args.pid_file is not None:
        atomic_write_bytes(args.pid_file, f"{os.getpid()}\n".encode())
        _remove_at_signal_exit(args.pid_file)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            proxy_headers=False,
            server_header=False,
            **tls_options,
        )
    finally:
        if args.pid_file is not None:
            args.pid_file.unlink(missing_ok=True)
    return ExitCode.OK


def _remove_at_signal_exit(pid_file: Path) -> None:
    """Remove ``pid_file`` when the process ends by SIGINT/SIGTERM.

    uvicorn shuts down gracefully, restores the handlers it found and raises the signal
    again; these handlers then remove the file and let the signal end the process as
    before (so the exit status still says which signal stopped it).
    """
    import signal

    def remove_and_reraise(signum: int, _frame: object) -> None:
        pid_file.unlink(missing_ok=True)
        signal.signal(
            signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler
        )
        signal.raise_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, remove_and_reraise)


def _tls_options(tls: TlsSettings) -> dict[str, Any]:
    """uvicorn's TLS arguments for ``tls`` (none without a certificate), and SIGHUP reload."""
    import logging
    import signal

    from tensorguard.service.tls_server import PeerCertificateProtocol, ServerTls
    from tensorguard.service.tls_settings import NodeAuth

    log = logging.getLogger("tensorguard.service")
    if tls.node_auth is NodeAuth.SIGNATURE:
        log.warning(
            "node routes accept signed requests without a node certificate (%s); set "
            "TG_TLS_CLIENT_CA_FILE and TG_TLS_CRL_FILE for mutual TLS (docs/IDENTITY.md)",
            "TG_NODE_AUTH=signature" if tls.verifies_clients else "no TG_TLS_CLIENT_CA_FILE",
        )
    if not tls.enabled:
        log.warning("serving plain HTTP: set TG_TLS_CERT_FILE and TG_TLS_KEY_FILE for HTTPS")
        return {}
    server_tls = ServerTls(tls)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: server_tls.reload())
    options: dict[str, Any] = {"ssl_context_factory": lambda _config, _default: server_tls.context}
    if tls.verifies_clients:
        options["http"] = PeerCertificateProtocol
    return options


def _token(args: argparse.Namespace) -> int:
    import os

    from tensorguard.service.errors import ServiceConfigError
    from tensorguard.service.settings import load_settings
    from tensorguard.service.tokens import Role, issue_token

    if not os.environ.get("TG_SECRET_KEY"):
        raise ServiceConfigError(
            "TG_SECRET_KEY is not set: a token needs the key the service verifies with; "
            "set TG_SECRET_KEY to the service's key"
        )
    settings = load_settings()
    print(issue_token(settings, args.subject, Role(args.role), lifetime_s=args.ttl))
    return ExitCode.OK
