"""A guard for resource fields that Dagster resolves only when a run starts.

On the deployment path a resource field may hold a :class:`dagster.EnvVar`: a ``str``
whose value is the variable's NAME until a run resolves it. Read outside a run, such a
field would silently name a file ``TG_SITES_FILE``; :func:`resolved` refuses instead.
"""

from __future__ import annotations

from dagster import EnvVar


def resolved(value: str, field: str) -> str:
    """``value`` of the resource field ``field``; raise :class:`RuntimeError` when it is
    still an unresolved :class:`~dagster.EnvVar` (the resource is used outside a run)."""
    if isinstance(value, EnvVar):
        raise RuntimeError(
            f"{field} is EnvVar({value.env_var_name!r}), which Dagster resolves only when a "
            "run starts; outside a run build the resources from an explicit environment, "
            "e.g. build_resources(os.environ)"
        )
    return value
