"""The trust store's lookups, edits, file form and refusals, word for word (#18 item 6).

``tensorguard/tgsp/_trust.py`` is the only source of trust for the verifier: these pin
how a key is found (id, unique prefix of at least 8 hex digits, label), how the store is
edited (no duplicate pin, never the last key removed), its exact JSON, and every
refusal of a damaged or edited store file.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey, CompositeVerifyKey
from tensorguard.tgsp import TrustStore, TrustStoreError

KEYS = [CompositeSigningKey.generate().public_key() for _ in range(3)]
IDS = [key.fingerprint() for key in KEYS]


def store(*indexes: int, labels: dict[str, str] | None = None) -> TrustStore:
    return TrustStore([KEYS[i] for i in indexes], labels)


def message(error: pytest.ExceptionInfo[TrustStoreError]) -> str:
    return str(error.value)


def test_lookups_by_id_membership_and_size() -> None:
    pinned = store(0, 1, labels={IDS[0]: "prod"})
    assert pinned.get(IDS[0]) == KEYS[0]
    assert pinned.get(IDS[1]) == KEYS[1]
    assert pinned.get(IDS[2]) is None
    assert pinned.label(IDS[0]) == "prod"
    assert pinned.label(IDS[1]) is None
    assert IDS[1] in pinned
    assert IDS[2] not in pinned
    assert len(pinned) == 2
    assert len(TrustStore()) == 0
    assert sorted(key.fingerprint() for key in pinned) == sorted(IDS[:2])
    assert repr(pinned) == f"TrustStore({sorted(IDS[:2])!r})"


def test_with_key_pins_a_new_key_once() -> None:
    pinned = store(0)
    grown = pinned.with_key(KEYS[1], "ci")
    assert len(pinned) == 1
    assert grown.get(IDS[1]) == KEYS[1]
    assert grown.label(IDS[1]) == "ci"
    assert grown.get(IDS[0]) == KEYS[0]
    assert pinned.with_key(KEYS[1]).label(IDS[1]) is None
    assert pinned.with_key(KEYS[1], "").label(IDS[1]) is None
    labelled = store(0, labels={IDS[0]: "prod"}).with_key(KEYS[1])
    assert labelled.label(IDS[0]) == "prod"
    with pytest.raises(TrustStoreError) as caught:
        grown.with_key(KEYS[0])
    assert message(caught) == f"key {IDS[0]} is already pinned; nothing to add"


def test_resolve_by_full_id_prefix_or_label() -> None:
    pinned = store(0, 1, labels={IDS[1]: "backup"})
    assert pinned.resolve(IDS[0]) == IDS[0]
    assert pinned.resolve(IDS[0][:8]) == IDS[0]
    assert pinned.resolve("backup") == IDS[1]


def test_resolve_refuses_short_unknown_and_ambiguous_names() -> None:
    pinned = store(0, 1, 2, labels={IDS[0]: "same", IDS[1]: "same"})
    hint = (
        "; name a key by its full key id or a unique label "
        "(tensorguard tgsp verify prints a package's signer key id)"
    )
    with pytest.raises(TrustStoreError) as caught:
        pinned.resolve(IDS[2][:7])
    assert message(caught) == f"no pinned key match {IDS[2][:7]!r}{hint}"
    with pytest.raises(TrustStoreError) as caught:
        pinned.resolve("same")
    assert message(caught) == f"2 pinned keys match 'same'{hint}"
    with pytest.raises(TrustStoreError) as caught:
        pinned.resolve("")
    assert message(caught) == f"no pinned key match ''{hint}"
    # a label that is also a prefix of its own key counts once
    own = store(0, labels={IDS[0]: IDS[0][:10]})
    assert own.resolve(IDS[0][:10]) == IDS[0]


def test_without_removes_one_key_and_its_label_but_never_the_last() -> None:
    pinned = store(0, 1, labels={IDS[0]: "old", IDS[1]: "new"})
    smaller = pinned.without(IDS[0])
    assert len(smaller) == 1
    assert IDS[0] not in smaller
    assert smaller.label(IDS[0]) is None
    assert smaller.label(IDS[1]) == "new"
    assert len(pinned) == 2
    with pytest.raises(TrustStoreError) as caught:
        smaller.without(IDS[2])
    assert message(caught) == f"key {IDS[2]} is not pinned; nothing to remove"
    with pytest.raises(TrustStoreError) as caught:
        smaller.without(IDS[1])
    assert message(caught) == (
        "refusing to remove the only pinned key: pin its successor first "
        "(tensorguard trust-store add)"
    )


def expected_entry(index: int, label: str | None = None) -> dict[str, str]:
    entry = {
        "key_id": IDS[index],
        "algorithm": "COMPSIG-MLDSA65-Ed25519-SHA512",
        "public_key": base64.b64encode(KEYS[index].public_bytes()).decode("ascii"),
    }
    if label is not None:
        entry["label"] = label
    return entry


def test_the_file_form_is_sorted_by_key_id_with_labels_where_given(tmp_path: Path) -> None:
    pinned = store(2, 0, 1, labels={IDS[1]: "ci"})
    order = sorted(range(3), key=lambda i: IDS[i])
    document = {
        "format": "tensorguard-trust-store",
        "version": 1,
        "keys": [expected_entry(i, "ci" if i == 1 else None) for i in order],
    }
    assert pinned.to_json() == document
    path = tmp_path / "trust.json"
    pinned.save(path)
    assert path.read_text(encoding="utf-8") == json.dumps(document, indent=2, sort_keys=True) + "\n"
    loaded = TrustStore.load(path)
    assert sorted(key.fingerprint() for key in loaded) == sorted(IDS)
    assert loaded.label(IDS[1]) == "ci"
    assert loaded.label(IDS[0]) is None


def document_with(*entries: Any) -> dict[str, Any]:
    return {"format": "tensorguard-trust-store", "version": 1, "keys": list(entries)}


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"format": "tensorguard-trust-store", "version": 1},
        {"format": "tensorguard-trust-store", "version": 2, "keys": []},
        {"format": "tensorguard-trust", "version": 1, "keys": []},
        {"format": "tensorguard-trust-store", "version": 1, "keys": {}},
    ],
)
def test_a_document_of_another_kind_is_refused(data: Any) -> None:
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.from_json(data, "pins.json")
    assert message(caught) == "pins.json is not a 'tensorguard-trust-store' version 1 document"
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.from_json(data)
    assert message(caught) == "trust store is not a 'tensorguard-trust-store' version 1 document"


def test_each_bad_entry_is_named_by_its_index() -> None:
    good = expected_entry(0)
    bad_entries: list[Any] = ["a string", {**expected_entry(1), "algorithm": "Ed25519"}, {}]
    for bad in bad_entries:
        with pytest.raises(TrustStoreError) as caught:
            TrustStore.from_json(document_with(good, bad), "pins.json")
        assert message(caught) == (
            "pins.json keys[1]: algorithm must be COMPSIG-MLDSA65-Ed25519-SHA512"
        )
    for public_key in ("not base64!", base64.b64encode(b"short").decode(), None):
        entry = {**expected_entry(1), "public_key": public_key}
        with pytest.raises(TrustStoreError) as caught:
            TrustStore.from_json(document_with(good, entry), "pins.json")
        assert message(caught) == "pins.json keys[1]: public_key is not a composite public key"
    encoded = expected_entry(1)["public_key"]
    for junk in (encoded[:100] + "!" + encoded[100:], encoded[:50] + "\n" + encoded[50:]):
        with pytest.raises(TrustStoreError) as caught:
            TrustStore.from_json(document_with(good, {**expected_entry(1), "public_key": junk}))
        assert message(caught) == ("trust store keys[1]: public_key is not a composite public key")
    for key_id in (IDS[0], None, IDS[1].upper()):
        entry = {**expected_entry(1), "key_id": key_id}
        with pytest.raises(TrustStoreError) as caught:
            TrustStore.from_json(document_with(good, entry))
        assert message(caught) == (
            "trust store keys[1]: key_id does not match SHA-256 of the public key; the entry "
            "was edited or corrupted"
        )


def test_labels_are_read_only_when_they_are_strings() -> None:
    loaded = TrustStore.from_json(
        document_with(expected_entry(0, "prod"), {**expected_entry(1), "label": 5})
    )
    assert loaded.label(IDS[0]) == "prod"
    assert loaded.label(IDS[1]) is None
    assert isinstance(loaded.get(IDS[1]), CompositeVerifyKey)


def test_an_unreadable_or_damaged_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.load(missing)
    assert message(caught).startswith(f"cannot read trust store {missing}: ")
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": 1, "format": 2}')
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.load(damaged)
    assert message(caught) == (
        f"cannot read trust store {damaged}: trust store {damaged} repeats the object key 'format'"
    )
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "x"}))
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.load(other)
    assert message(caught) == f"{other} is not a 'tensorguard-trust-store' version 1 document"
