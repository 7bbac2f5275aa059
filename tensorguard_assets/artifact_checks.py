"""Writing and integrity-checking the files of artifact-producing assets.

Each artifact asset declares :func:`integrity_check_spec` and yields
:func:`verify_artifact` after writing: the files are re-read from disk, re-hashed and
scanned for placeholder markers, so a check passes only for real, recorded bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from tensorguard.digest import sha256_file, sha256_path
from tensorguard.durable import atomic_write_bytes

INTEGRITY_CHECK = "artifact_integrity"
# The markers are split and joined with "+" so this source file does not itself contain
# them (the repository guard greps production code for the joined strings; the formatter
# would merge adjacent literals).
PLACEHOLDER_MARKERS: tuple[bytes, ...] = (
    b"DUMMY" + b"_",
    b"SIMUL" + b"ATION",
    b"mock_" + b"ciphertext",
    b"Simulated" + b"Trainer",
    b"MVP_" + b"STUB",
    b"PLACE" + b"HOLDER",
)
SCAN_WINDOW = 1024 * 1024


def integrity_check_spec(asset_name: str) -> AssetCheckSpec:
    """The blocking integrity check declared by an artifact asset."""
    return AssetCheckSpec(
        name=INTEGRITY_CHECK,
        asset=AssetKey(asset_name),
        blocking=True,
        description=(
            "The artifact exists, is non-empty, its SHA-256 matches the digest recorded in "
            "metadata, and it contains no placeholder marker (see PLACEHOLDER_MARKERS)."
        ),
    )


def write_artifact(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically and durably; return the file's SHA-256."""
    atomic_write_bytes(path, data)
    return sha256_file(path)


def write_json_artifact(path: Path, document: dict[str, Any]) -> str:
    """Write ``document`` as indented, key-sorted JSON (see :func:`write_artifact`)."""
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    return write_artifact(path, text.encode("utf-8"))


def find_placeholder(path: Path) -> str | None:
    """The first placeholder marker found in a file or tree, as 'file: marker'."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    longest = max(len(m) for m in PLACEHOLDER_MARKERS)
    for file in files:
        with file.open("rb") as handle:
            tail = b""
            while chunk := handle.read(SCAN_WINDOW):
                window = tail + chunk
                for marker in PLACEHOLDER_MARKERS:
                    if marker in window:
                        return f"{file.name}: {marker.decode()}"
                tail = window[-longest:]
    return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verify_artifact(asset_name: str, path: Path, recorded_digest: str) -> AssetCheckResult:
    """Re-hash ``path`` and compare with ``recorded_digest``; scan for placeholders."""
    problems: list[str] = []
    if not path.exists():
        problems.append(f"{path} does not exist")
    else:
        size = _size(path)
        if size == 0:
            problems.append(f"{path} is empty")
        actual = sha256_path(path)
        if not recorded_digest:
            problems.append("no digest was recorded")
        elif actual != recorded_digest:
            problems.append(f"digest mismatch: recorded {recorded_digest}, on disk {actual}")
        marker = find_placeholder(path)
        if marker is not None:
            problems.append(f"placeholder marker found ({marker})")
    return AssetCheckResult(
        asset_key=AssetKey(asset_name),
        check_name=INTEGRITY_CHECK,
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "path": MetadataValue.path(str(path)),
            "problems": MetadataValue.text("; ".join(problems) or "none"),
        },
    )
