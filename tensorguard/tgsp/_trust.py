"""Pinned producer keys: the only source of trust when verifying a package.

A package names its producer only by key id (SHA-256 of the composite public key); it
never carries a public key, so it cannot vouch for itself. The verifier looks the id
up here and uses the pinned key.

Trust store file (JSON, UTF-8)::

    {"format": "tensorguard-trust-store", "version": 1,
     "keys": [{"key_id": "<64 hex>", "algorithm": "COMPSIG-MLDSA65-Ed25519-SHA512",
               "public_key": "<base64 of the 1984-byte composite public key>",
               "label": "<optional human-readable name>"}]}

Loading recomputes every key id from its public key and refuses a mismatch.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tensorguard.codec import CodecError, parse_json_object
from tensorguard.crypto import COMPOSITE_ALGORITHM, CompositeVerifyKey, KeyFormatError
from tensorguard.durable import atomic_write_bytes
from tensorguard.tgsp._errors import TrustStoreError

TRUST_STORE_FORMAT = "tensorguard-trust-store"
TRUST_STORE_VERSION = 1


class TrustStore:
    """An immutable set of pinned composite verification keys, indexed by key id."""

    def __init__(
        self, keys: Iterable[CompositeVerifyKey] = (), labels: dict[str, str] | None = None
    ) -> None:
        """Pin ``keys``; ``labels`` optionally maps key ids to display names."""
        self._keys = {key.fingerprint(): key for key in keys}
        self._labels = dict(labels or {})

    def get(self, key_id: str) -> CompositeVerifyKey | None:
        """Return the pinned key with this id, or ``None``."""
        return self._keys.get(key_id)

    def label(self, key_id: str) -> str | None:
        """Return the display name recorded for a key id, if any."""
        return self._labels.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[CompositeVerifyKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustStore({sorted(self._keys)!r})"

    def with_key(self, key: CompositeVerifyKey, label: str | None = None) -> TrustStore:
        """A new store that also pins ``key``; refuses a key that is already pinned."""
        key_id = key.fingerprint()
        if key_id in self._keys:
            raise TrustStoreError(f"key {key_id} is already pinned; nothing to add")
        labels = dict(self._labels)
        if label:
            labels[key_id] = label
        return TrustStore([*self, key], labels)

    def resolve(self, key: str) -> str:
        """The pinned key id that ``key`` names: a full key id, a unique prefix of at least
        8 hex digits, or a label. Raises :class:`TrustStoreError` otherwise."""
        by_label = [key_id for key_id, label in self._labels.items() if label == key]
        by_prefix = [key_id for key_id in self._keys if len(key) >= 8 and key_id.startswith(key)]
        matches = sorted(set(by_label) | set(by_prefix))
        if len(matches) != 1:
            what = "no pinned key" if not matches else f"{len(matches)} pinned keys"
            raise TrustStoreError(
                f"{what} match {key!r}; name a key by its full key id or a unique label "
                "(tensorguard tgsp verify prints a package's signer key id)"
            )
        return matches[0]

    def without(self, key_id: str) -> TrustStore:
        """A new store without the pinned key ``key_id``; refuses to remove the last key
        (a store that pins nothing makes every verifier refuse every package)."""
        if key_id not in self._keys:
            raise TrustStoreError(f"key {key_id} is not pinned; nothing to remove")
        if len(self._keys) == 1:
            raise TrustStoreError(
                "refusing to remove the only pinned key: pin its successor first "
                "(tensorguard trust-store add)"
            )
        labels = {k: v for k, v in self._labels.items() if k != key_id}
        return TrustStore([key for k, key in self._keys.items() if k != key_id], labels)

    def to_json(self) -> dict[str, Any]:
        """Return the file representation."""
        entries = []
        for key_id, key in sorted(self._keys.items()):
            entry = {
                "key_id": key_id,
                "algorithm": COMPOSITE_ALGORITHM,
                "public_key": base64.b64encode(key.public_bytes()).decode("ascii"),
            }
            if key_id in self._labels:
                entry["label"] = self._labels[key_id]
            entries.append(entry)
        return {"format": TRUST_STORE_FORMAT, "version": TRUST_STORE_VERSION, "keys": entries}

    def save(self, path: Path) -> None:
        """Write the trust store as JSON (public data; mode 0644)."""
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))

    @classmethod
    def from_json(cls, data: Any, source: str = "trust store") -> TrustStore:
        """Parse a trust store object, recomputing and checking every key id."""
        if (
            not isinstance(data, dict)
            or data.get("format") != TRUST_STORE_FORMAT
            or data.get("version") != TRUST_STORE_VERSION
            or not isinstance(data.get("keys"), list)
        ):
            raise TrustStoreError(
                f"{source} is not a '{TRUST_STORE_FORMAT}' version {TRUST_STORE_VERSION} document"
            )
        keys: list[CompositeVerifyKey] = []
        labels: dict[str, str] = {}
        for index, entry in enumerate(data["keys"]):
            where = f"{source} keys[{index}]"
            if not isinstance(entry, dict) or entry.get("algorithm") != COMPOSITE_ALGORITHM:
                raise TrustStoreError(f"{where}: algorithm must be {COMPOSITE_ALGORITHM}")
            try:
                raw = base64.b64decode(str(entry.get("public_key", "")), validate=True)
                key = CompositeVerifyKey.from_public_bytes(raw)
            except (binascii.Error, KeyFormatError) as exc:
                raise TrustStoreError(f"{where}: public_key is not a composite public key") from exc
            if entry.get("key_id") != key.fingerprint():
                raise TrustStoreError(
                    f"{where}: key_id does not match SHA-256 of the public key; the entry was "
                    "edited or corrupted"
                )
            keys.append(key)
            label = entry.get("label")
            if isinstance(label, str):
                labels[key.fingerprint()] = label
        return cls(keys, labels)

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        """Read a trust store file."""
        try:
            data = parse_json_object(path.read_bytes(), what=f"trust store {path}")
        except (OSError, CodecError) as exc:
            raise TrustStoreError(f"cannot read trust store {path}: {exc}") from exc
        return cls.from_json(data, str(path))
