"""Scan files and text for private-key material and configured secret values.

Used after a round (``python -m tensorguard_assets.secret_scan``) over the artifact root
and every run's event log: none of them may hold a private key or the value of a
configured secret. A finding names where it was found and what kind of material it
is (for a secret: the variable's name and the encoding seen), never the value.

What counts as private-key material:

* PEM blocks of private keys (``-----BEGIN ... PRIVATE KEY-----``, encrypted or not);
* TensorGuard key files holding a private key (``tensorguard tgsp`` key files with a
  ``private_key`` field) and key-provider records (``TGKEYREC``), which belong in a key
  directory, never among artifacts or in a log;
* the value of each configured secret (``TG_KEY_MASTER*``, ``TG_PKCS11_PIN*``,
  ``TG_SECRET_KEY``, ``TG_MQTT_PASSWORD``, the database password, development masters),
  as raw text, hex, or standard / URL-safe base64.

Limits: a secret stored in another encoding (compressed, encrypted, split) is not found;
raw key bytes without a marker (e.g. a bare 32-byte seed) are only found when they are
a configured secret.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tensorguard.preflight import secret_values

READ_SIZE = 1 << 20
MIN_SECRET_LENGTH = 8
"""Shorter values are not searched: they would match by chance."""

_PEM_PRIVATE = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_MARKERS: tuple[tuple[bytes, str], ...] = (
    (b'"private_key"', "TensorGuard key file with a private key"),
    (b"TGKEYREC", "key-provider record"),
)
_OVERLAP = 256


@dataclass(frozen=True)
class SecretPattern:
    """One encoding of one configured secret; ``label`` names it without its value."""

    needle: bytes
    label: str

    def __repr__(self) -> str:
        """Never show the needle."""
        return f"SecretPattern(label={self.label!r})"


@dataclass(frozen=True)
class Finding:
    """Private-key material or a secret found at ``where`` (a path or a run's log)."""

    where: str
    what: str

    def __str__(self) -> str:
        """``where: what``."""
        return f"{self.where}: {self.what}"


def secret_patterns(named_values: Mapping[str, str]) -> list[SecretPattern]:
    """Every searched encoding of each value (raw, hex, base64, URL-safe base64).

    ``named_values`` maps a label (e.g. the variable's name) to the secret value; values
    shorter than :data:`MIN_SECRET_LENGTH` are skipped.
    """
    patterns: list[SecretPattern] = []
    for label, value in named_values.items():
        if len(value) < MIN_SECRET_LENGTH:
            continue
        raw = value.encode("utf-8")
        encodings = {
            "raw": raw,
            "hex": raw.hex().encode("ascii"),
            "base64": base64.b64encode(raw).rstrip(b"="),
            "url-safe base64": base64.urlsafe_b64encode(raw).rstrip(b"="),
        }
        seen: set[bytes] = set()
        for encoding, needle in encodings.items():
            if needle not in seen:
                seen.add(needle)
                patterns.append(SecretPattern(needle, f"{label} ({encoding})"))
    return patterns


def configured_secrets(environ: Mapping[str, str], state_dir: Path | None) -> dict[str, str]:
    """The configured secret values by label: secret variables of ``environ`` (and the
    database password) and, under ``state_dir``, the development master files."""
    named: dict[str, str] = {}
    values = set(secret_values(environ))
    for name, value in environ.items():
        if value in values:
            named[name] = value
    for index, value in enumerate(sorted(values - set(named.values()))):
        named[f"secret #{index + 1} (DATABASE_URL password or its URL-quoted form)"] = value
    if state_dir is not None:
        for master in sorted((state_dir / "dev-secrets").glob("*_master")):
            value = master.read_text(encoding="utf-8").strip()
            if value:
                named[f"development master {master.name}"] = value
    return named


def scan_bytes(data: bytes, where: str, patterns: Sequence[SecretPattern]) -> list[Finding]:
    """Findings in one buffer (each kind once per buffer)."""
    found: list[Finding] = []
    if _PEM_PRIVATE.search(data):
        found.append(Finding(where, "PEM private key block"))
    found.extend(Finding(where, what) for marker, what in _MARKERS if marker in data)
    found.extend(Finding(where, f"value of {p.label}") for p in patterns if p.needle in data)
    return found


def _windows(path: Path, overlap: int) -> Iterator[bytes]:
    """The file in overlapping windows, so a match across a read boundary is seen."""
    with path.open("rb") as handle:
        tail = b""
        while block := handle.read(READ_SIZE):
            yield tail + block
            tail = block[-overlap:]


def scan_file(path: Path, patterns: Sequence[SecretPattern], where: str) -> list[Finding]:
    """Findings in one file, read in windows (constant memory), each kind once."""
    overlap = max([_OVERLAP, *(len(p.needle) for p in patterns)])
    found: dict[str, Finding] = {}
    for window in _windows(path, overlap):
        for finding in scan_bytes(window, where, patterns):
            found.setdefault(finding.what, finding)
    return list(found.values())


def scan_tree(root: Path, patterns: Sequence[SecretPattern]) -> list[Finding]:
    """Findings in every regular file under ``root`` (symbolic links are not followed)."""
    found: list[Finding] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found.extend(scan_file(path, patterns, str(path)))
    return found


def scan_texts(
    texts: Iterable[tuple[str, str]], patterns: Sequence[SecretPattern]
) -> list[Finding]:
    """Findings in ``(where, text)`` pairs (e.g. serialised log events)."""
    found: list[Finding] = []
    for where, text in texts:
        found.extend(scan_bytes(text.encode("utf-8", "surrogatepass"), where, patterns))
    return found
