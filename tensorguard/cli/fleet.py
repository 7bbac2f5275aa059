"""``tensorguard fleet collect``: the fleet collector (MQTT to the application database).

Settings come from the environment the pipeline uses (docs/OPERATIONS.md):
``DATABASE_URL`` (required in production; development: ``.tensorguard/tensorguard.db``),
``TG_FLEET``, ``TG_CHANNEL``, ``TG_FLEET_RECIPIENTS_DIR``, ``TG_MQTT_HOST``,
``TG_MQTT_PORT``, ``TG_MQTT_USERNAME``, ``TG_MQTT_PASSWORD``, ``TG_MQTT_CA_FILE``,
``TG_MQTT_CERT_FILE``, ``TG_MQTT_KEY_FILE``; the audit key from the key provider
(``TG_KEY_PROVIDER`` and friends, docs/KEYS.md).

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK`` after a clean stop (SIGINT or
SIGTERM, or the end of ``--duration``); ``CONFIG`` for missing or refused settings;
``KEY_NOT_FOUND`` when the audit key does not exist; ``ERROR`` when the broker or the
database cannot be used, or the audit log is broken or pinned to another key.
The MQTT and database libraries are imported by the handler.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tensorguard.cli.exit_codes import ExitCode, reporting_errors


def add_fleet_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``fleet collect``; it sets ``args.handler``."""
    fleet = subparsers.add_parser(
        "fleet",
        help="fleet operations: the collector of node registrations and install reports",
        description="See docs/FLEET.md and docs/OPERATIONS.md.",
    )
    commands = fleet.add_subparsers(dest="fleet_command", required=True)
    collect = commands.add_parser(
        "collect",
        help="record node registrations and install reports from MQTT in the application "
        "DB (signed audit log) and deliver queued release announcements",
        description="Runs until SIGINT/SIGTERM (or --duration). Settings: DATABASE_URL, "
        "TG_FLEET, TG_CHANNEL, TG_FLEET_RECIPIENTS_DIR, TG_MQTT_*; see docs/OPERATIONS.md.",
    )
    collect.add_argument(
        "--audit-log",
        type=Path,
        default=None,
        help="signed audit log file (default: <state>/fleet-collector/audit.jsonl)",
    )
    collect.add_argument(
        "--audit-key-name",
        default=None,
        help="composite signing key in the key provider (default: fleet-collector-audit; "
        "create it with `tensorguard keys generate --name fleet-collector-audit`)",
    )
    collect.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until stopped)",
    )
    collect.add_argument(
        "--outbox-interval",
        type=float,
        default=5.0,
        help="seconds between deliveries of queued release announcements (5)",
    )
    collect.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade the application DB schema to the newest revision first",
    )
    collect.set_defaults(handler=reporting_errors("fleet collect", _collect))


def _collect(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading
    from types import FrameType

    from tensorguard.errors import ConfigurationError
    from tensorguard.fleet.collector import (
        DEFAULT_AUDIT_KEY_NAME,
        CollectorAuditLog,
        CollectorService,
        FleetCollector,
        enrolled_recipients,
    )
    from tensorguard.fleet.db import FleetDatabase, migrate, safe_url, sqlite_url
    from tensorguard.fleet.mqtt import pipeline_mqtt_settings
    from tensorguard.keys import key_provider_from_env, state_dir
    from tensorguard.production import is_production

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    env = os.environ
    database_url = env.get("DATABASE_URL", "")
    if not database_url:
        if is_production(env):
            raise ConfigurationError(
                "DATABASE_URL is not set: the collector writes to the application database "
                "the pipeline records releases in; set DATABASE_URL, e.g. "
                "postgresql://tg:PASSWORD@db:5432/tensorguard"
            )
        database_url = sqlite_url(Path(state_dir(env)) / "tensorguard.db")
    if not env.get("TG_MQTT_HOST", ""):
        raise ConfigurationError(
            "TG_MQTT_HOST is not set: the collector reads the fleet's broker; set "
            "TG_MQTT_HOST and TG_MQTT_PORT (and TG_MQTT_USERNAME/TG_MQTT_PASSWORD)"
        )
    try:
        port = int(env.get("TG_MQTT_PORT", "1883"))
    except ValueError:
        raise ConfigurationError("TG_MQTT_PORT must be a port number") from None
    settings = pipeline_mqtt_settings(
        env["TG_MQTT_HOST"],
        port,
        username=env.get("TG_MQTT_USERNAME", ""),
        tls_ca_file=env.get("TG_MQTT_CA_FILE", ""),
        tls_cert_file=env.get("TG_MQTT_CERT_FILE", ""),
        tls_key_file=env.get("TG_MQTT_KEY_FILE", ""),
    )
    state = Path(state_dir(env))
    recipients = Path(env.get("TG_FLEET_RECIPIENTS_DIR", "") or state / "fleet-recipients")
    audit_path = args.audit_log or state / "fleet-collector" / "audit.jsonl"
    if args.migrate:
        migrate(database_url)
    database = FleetDatabase(database_url)
    try:
        database.require_current_schema()
        with key_provider_from_env(env, allow_ephemeral=False) as provider:
            collector = FleetCollector(
                database,
                env.get("TG_FLEET", "demo"),
                audit=CollectorAuditLog(
                    audit_path, provider.signer(args.audit_key_name or DEFAULT_AUDIT_KEY_NAME)
                ),
                recipient_fingerprint=enrolled_recipients(recipients),
                default_channel=env.get("TG_CHANNEL", "stable"),
            )
            service = CollectorService(collector, settings, outbox_interval_s=args.outbox_interval)
            stop = threading.Event()

            def request_stop(signum: int, frame: FrameType | None) -> None:
                del signum, frame  # the signal handler signature
                stop.set()

            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
            print(
                f"collecting fleet {collector.fleet} from {settings.endpoint} into "
                f"{safe_url(database_url)}; audit log {audit_path}",
                flush=True,
            )
            stats = service.run(stop, duration_s=args.duration)
        counts = ", ".join(f"{name} {count}" for name, count in sorted(stats.counts.items()))
        print(f"collector stopped: {counts or 'no messages'}", flush=True)
    finally:
        database.close()
    return ExitCode.OK
