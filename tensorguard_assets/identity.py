"""Fleet identity in Dagster: the certificate inventory with its expiry check, and the
scheduled renewal of ACME-managed service certificates (docs/IDENTITY.md)."""
# No "from __future__ import annotations": Dagster resolves resource parameter types
# from the runtime annotations.

from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
)

from tensorguard.identity.inventory import expiring_within
from tensorguard.identity.renewal import RenewalState
from tensorguard_assets import groups
from tensorguard_assets.metadata import metadata_float
from tensorguard_resources import fail_closed_on
from tensorguard_resources.identity import FleetIdentity

EXPIRY_CHECK = "no_certificate_expires_soon"
RENEWAL_CRON = "17 3 * * *"

INVENTORY_SCHEMA = TableSchema(
    columns=[
        TableColumn("endpoint", "string"),
        TableColumn("profile", "string"),
        TableColumn("source", "string"),
        TableColumn("issuer", "string"),
        TableColumn("serial", "string"),
        TableColumn("not_after", "string"),
        TableColumn("days_left", "float"),
    ]
)


@asset(
    group_name=groups.IDENTITY,
    description="Renew every ACME-managed service certificate that is due.",
)
def certificate_renewals(
    context: AssetExecutionContext, fleet_identity: FleetIdentity
) -> MaterializeResult:
    """One renewal job per due endpoint; fails the run when any ends FAILED or ROLLED_BACK
    (each transition and its reason is in the CA's signed audit log)."""
    with fail_closed_on(context):
        outcomes = fleet_identity.renew_due(datetime.now(UTC))
    summary = {
        outcome.endpoint_id: f"{outcome.state.value} ({outcome.job_id})"
        + (f": {outcome.reason}" if outcome.reason else "")
        for outcome in outcomes
    }
    metadata = {
        "renewed": MetadataValue.int(sum(o.state is RenewalState.SUCCEEDED for o in outcomes)),
        "attempted": MetadataValue.int(len(outcomes)),
        "outcomes": MetadataValue.json(summary),
        "configuration": MetadataValue.text(
            fleet_identity.renewal_config or "none (TG_IDENTITY_RENEWAL_CONFIG unset)"
        ),
    }
    unsuccessful = [o for o in outcomes if o.state is not RenewalState.SUCCEEDED]
    if unsuccessful:
        raise Failure(
            description="certificate renewal did not succeed for "
            + "; ".join(f"{o.endpoint_id}: {o.state.value} ({o.reason})" for o in unsuccessful),
            metadata=metadata,
            allow_retries=False,
        )
    return MaterializeResult(metadata=metadata)


@asset(
    group_name=groups.IDENTITY,
    deps=[certificate_renewals],
    description="Each node and service endpoint's certificate: issuer, serial, expiry.",
    check_specs=[
        AssetCheckSpec(
            name=EXPIRY_CHECK,
            asset="certificate_inventory",
            description="Fails when any certificate expires within the warning window.",
        )
    ],
)
def certificate_inventory(
    context: AssetExecutionContext, fleet_identity: FleetIdentity
) -> MaterializeResult:
    """The inventory as a table; the check fails ``expiry_warning_days`` before an expiry."""
    with fail_closed_on(context):
        inventory = fleet_identity.inventory(datetime.now(UTC))
    window = fleet_identity.expiry_warning_days
    due = expiring_within(inventory, window)
    rows = [
        TableRecord(
            {
                "endpoint": entry.endpoint,
                "profile": entry.profile.value,
                "source": entry.source,
                "issuer": entry.issuer,
                "serial": entry.serial,
                "not_after": entry.not_after.isoformat(),
                "days_left": entry.days_left,
            }
        )
        for entry in inventory
    ]
    per_endpoint = {
        f"{entry.profile.value}/{entry.endpoint}": MetadataValue.json(
            {
                "issuer": entry.issuer,
                "serial": entry.serial,
                "not_after": entry.not_after.isoformat(),
                "days_left": entry.days_left,
            }
        )
        for entry in inventory
    }
    soonest = {"min_days_left": metadata_float(inventory[0].days_left)} if inventory else {}
    return MaterializeResult(
        metadata={
            "endpoints": MetadataValue.int(len(inventory)),
            "certificates": MetadataValue.table(rows, schema=INVENTORY_SCHEMA),
            **soonest,
            **per_endpoint,
        },
        check_results=[
            AssetCheckResult(
                asset_key=AssetKey("certificate_inventory"),
                check_name=EXPIRY_CHECK,
                passed=not due,
                severity=AssetCheckSeverity.ERROR,
                description=(
                    "expiring within "
                    f"{window:g} days: "
                    + ", ".join(f"{e.profile.value} {e.endpoint} ({e.days_left} d)" for e in due)
                    if due
                    else f"no certificate expires within {window:g} days"
                ),
                metadata={"window_days": metadata_float(window)},
            )
        ],
    )


certificate_renewal_job = define_asset_job(
    "certificate_renewal_job",
    selection=[certificate_renewals, certificate_inventory],
    description="Renew due service certificates, then refresh the inventory and its check.",
)

certificate_renewal_schedule = ScheduleDefinition(
    job=certificate_renewal_job,
    cron_schedule=RENEWAL_CRON,
    execution_timezone="UTC",
    description="Daily: renew what is due, re-check every expiry.",
)
