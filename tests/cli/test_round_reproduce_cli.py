"""``tensorguard round reproduce`` refusals that need no training: a round spec signed by
another coordinator is the first diverging stage; a store without the round's records
is an error that names what is missing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from tensorguard.artifact_layout import PUBLISHED_COORDINATOR_KEY, ROUND_SPEC_FILE, partition_dir
from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation._round_spec import RoundSpec, sign_round_spec
from tensorguard.tgsp._keyfiles import write_key_file

ROUND = "2026-11-30"


def _store(root: Path, signer: CompositeSigningKey, coordinator: CompositeSigningKey) -> Path:
    spec = RoundSpec.from_reference(
        ROUND,
        "c" * 64,
        {"layers.0.q_proj.lora_B.weight": torch.zeros(2, 2)},
        300.0,
        opened_at=datetime(2026, 11, 30, tzinfo=UTC),
        aggregate_grid_bits=27,
    )
    spec_dir = partition_dir(root, "round_spec", ROUND)
    spec_dir.mkdir(parents=True)
    (spec_dir / ROUND_SPEC_FILE).write_bytes(sign_round_spec(spec, signer))
    write_key_file(root / PUBLISHED_COORDINATOR_KEY, coordinator.public_key())
    return root


def test_a_spec_signed_by_another_coordinator_is_the_first_diverging_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _store(tmp_path, CompositeSigningKey.generate(), CompositeSigningKey.generate())
    code = main(["round", "reproduce", ROUND, "--artifact-root", str(root)])
    out, err = capsys.readouterr()
    assert code == ExitCode.INTEGRITY
    assert "diverges first at stage round_spec" in err
    assert "first diverging stage: round_spec" in out


def test_a_store_without_the_rounds_records_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coordinator = CompositeSigningKey.generate()
    root = _store(tmp_path, coordinator, coordinator)
    code = main(["round", "reproduce", ROUND, "--artifact-root", str(root), "--json"])
    assert code == ExitCode.ERROR
    assert "no site_dataset is recorded for round '2026-11-30'" in capsys.readouterr().err
    # No key at all: the coordinator key file is the unusable input.
    (root / PUBLISHED_COORDINATOR_KEY).unlink()
    assert main(["round", "reproduce", ROUND, "--artifact-root", str(root)]) == ExitCode.INPUT
