"""Scan a round's outputs for keys and secrets: ``python -m tensorguard_assets.secret_scan``.

Looks at every run's event log on the instance in ``DAGSTER_HOME`` (each event
serialised as Dagster stores it), every file under ``DAGSTER_HOME`` (run storage,
compute logs) and every file under the artifact root (``--artifact-root``, default
``TG_ARTIFACT_ROOT`` or ``.tensorguard/artifacts``) for private-key material and the
values of the configured secrets (:mod:`tensorguard.secret_scan`): the environment's
secret variables and the development masters under the state directory (the artifact
root's parent). Prints one line per finding (never the value) and exits 1 when anything
was found, 0 when nothing was, 2 when it cannot run. ``make ci-round`` runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from dagster import DagsterInstance, serialize_value

from tensorguard.secret_scan import (
    Finding,
    SecretPattern,
    configured_secrets,
    scan_texts,
    scan_tree,
    secret_patterns,
)
from tensorguard_assets.resources import artifact_root_setting


def event_log_texts(instance: DagsterInstance) -> Iterator[tuple[str, str]]:
    """``(where, serialised event)`` for every event of every run on ``instance``."""
    for run in instance.get_runs():
        for index, event in enumerate(instance.all_logs(run.run_id)):
            yield f"run {run.run_id} ({run.job_name}) event {index}", serialize_value(event)


def scan_round(
    instance: DagsterInstance,
    artifact_root: Path,
    dagster_home: Path | None,
    patterns: Sequence[SecretPattern],
) -> list[Finding]:
    """Every finding in the instance's event logs, ``dagster_home`` and ``artifact_root``."""
    found = scan_texts(event_log_texts(instance), patterns)
    if dagster_home is not None and dagster_home.is_dir():
        found.extend(scan_tree(dagster_home, patterns))
    found.extend(scan_tree(artifact_root, patterns))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Scan; print the findings; 0 when clean, 1 when something was found, 2 on error."""
    parser = argparse.ArgumentParser(prog="python -m tensorguard_assets.secret_scan")
    parser.add_argument("--artifact-root", default=None, help="default: TG_ARTIFACT_ROOT")
    args = parser.parse_args(argv)
    artifact_root = Path(args.artifact_root or artifact_root_setting())
    home = os.environ.get("DAGSTER_HOME")
    if not home or not artifact_root.is_dir():
        print(
            "secret scan: needs DAGSTER_HOME (the round's instance) and an existing artifact "
            f"root (checked {artifact_root}); run a round first (make demo)",
            file=sys.stderr,
        )
        return 2
    patterns = secret_patterns(configured_secrets(os.environ, artifact_root.resolve().parent))
    with DagsterInstance.get() as instance:
        found = scan_round(instance, artifact_root, Path(home), patterns)
    for finding in found:
        print(f"FOUND {finding}")
    print(
        f"secret scan of {artifact_root}, {home} and every run's event log: "
        f"{len(patterns)} secret encodings searched, {len(found)} finding(s)"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
