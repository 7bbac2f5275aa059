"""Key files byte for byte and every refusal word for word (#18 item 6).

``tensorguard/tgsp/_keyfiles.py`` writes one JSON document per key (0600 for private
keys, 0644 for public ones) and refuses, naming the file, anything it cannot trust:
exposed private keys, other formats, versions and types, bad base64, bad key material
and a key id that does not match the key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import KeyFileError
from tensorguard.tgsp._keyfiles import (
    load_recipient_private_key,
    load_recipient_public_key,
    load_signing_key,
    load_verify_key,
    write_key_file,
)

SIGNING = CompositeSigningKey.generate()
RECIPIENT = XWingPrivateKey.generate()

CASES: list[tuple[str, Any, str, str, str, bytes, int]] = [
    (
        "s.key",
        SIGNING,
        "composite-signing-key",
        "COMPSIG-MLDSA65-Ed25519-SHA512",
        "private_key",
        SIGNING.private_bytes(),
        0o600,
    ),
    (
        "s.pub",
        SIGNING.public_key(),
        "composite-public-key",
        "COMPSIG-MLDSA65-Ed25519-SHA512",
        "public_key",
        SIGNING.public_key().public_bytes(),
        0o644,
    ),
    (
        "r.key",
        RECIPIENT,
        "xwing-private-key",
        "X-Wing",
        "private_key",
        RECIPIENT.private_bytes(),
        0o600,
    ),
    (
        "r.pub",
        RECIPIENT.public_key(),
        "xwing-public-key",
        "X-Wing",
        "public_key",
        RECIPIENT.public_key().public_bytes(),
        0o644,
    ),
]
KEY_IDS = {
    "s.key": SIGNING.public_key().fingerprint(),
    "s.pub": SIGNING.public_key().fingerprint(),
    "r.key": RECIPIENT.public_key().fingerprint(),
    "r.pub": RECIPIENT.public_key().fingerprint(),
}


@pytest.mark.parametrize(
    ("name", "key", "kind", "algorithm", "field", "material", "mode"),
    CASES,
    ids=[case[0] for case in CASES],  # key material is random: ids must not show it (xdist)
)
def test_each_key_type_is_written_as_documented(
    tmp_path: Path,
    name: str,
    key: Any,
    kind: str,
    algorithm: str,
    field: str,
    material: bytes,
    mode: int,
) -> None:
    path = tmp_path / name
    write_key_file(path, key)
    document = {
        "algorithm": algorithm,
        "format": "tensorguard-key",
        "key_id": KEY_IDS[name],
        field: base64.b64encode(material).decode("ascii"),
        "type": kind,
        "version": 1,
    }
    assert path.read_text(encoding="utf-8") == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert path.stat().st_mode & 0o777 == mode


def write_all(tmp_path: Path) -> None:
    for name, key, *_ in CASES:
        write_key_file(tmp_path / name, key)


LOADERS: dict[str, Callable[[Path], Any]] = {
    "s.key": load_signing_key,
    "s.pub": load_verify_key,
    "r.key": load_recipient_private_key,
    "r.pub": load_recipient_public_key,
}


def refusal(path: Path) -> str:
    with pytest.raises(KeyFileError) as caught:
        LOADERS[path.name](path)
    return str(caught.value)


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_an_existing_file_is_named_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.pub"
    path.write_text("keep me")
    with pytest.raises(KeyFileError) as caught:
        write_key_file(path, SIGNING.public_key())
    assert str(caught.value).startswith(f"cannot create key file {path}: ")
    assert path.read_text() == "keep me"


def test_a_missing_or_undecodable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "s.pub"
    assert refusal(missing).startswith(f"cannot read key file {missing}: ")
    assert "No such file or directory" in refusal(missing)
    missing.write_bytes(b"\xff\xfe not utf-8")
    assert refusal(missing).startswith(f"cannot read key file {missing}: ")
    assert "utf-8" in refusal(missing)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o610, 0o601, 0o660])
def test_private_key_files_open_to_anyone_else_are_refused(tmp_path: Path, mode: int) -> None:
    write_all(tmp_path)
    for name in ("s.key", "r.key"):
        path = tmp_path / name
        path.chmod(mode)
        assert refusal(path) == (
            f"private key file {path} is accessible by group or others "
            f"(mode {mode:04o}); run `chmod 600 {path}`"
        )


def test_owner_only_private_keys_and_readable_public_keys_load(tmp_path: Path) -> None:
    write_all(tmp_path)
    (tmp_path / "s.key").chmod(0o700)
    (tmp_path / "r.key").chmod(0o400)
    assert load_signing_key(tmp_path / "s.key").private_bytes() == SIGNING.private_bytes()
    assert load_recipient_private_key(tmp_path / "r.key").private_bytes() == (
        RECIPIENT.private_bytes()
    )
    (tmp_path / "s.pub").chmod(0o666)
    assert load_verify_key(tmp_path / "s.pub") == SIGNING.public_key()
    assert load_recipient_public_key(tmp_path / "r.pub") == RECIPIENT.public_key()


def test_text_that_is_not_a_json_object_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "s.pub"
    for text in ("not json", "[1, 2]", '{"a": 1, "a": 2}'):
        path.write_text(text)
        message = refusal(path)
        assert message.endswith("; the file is damaged or not a key file")
        assert str(path) in message


def test_format_version_and_type_are_checked_in_that_order(tmp_path: Path) -> None:
    write_all(tmp_path)
    path = tmp_path / "s.pub"
    edit(path, lambda d: d.update(format="tensorguard-keys", version=2, type="x"))
    assert refusal(path) == f"{path} is not a 'tensorguard-key' key file"
    edit(path, lambda d: d.update(format="tensorguard-key"))
    assert refusal(path) == f"{path}: unsupported key file version 2"
    edit(path, lambda d: d.pop("version"))
    assert refusal(path) == f"{path}: unsupported key file version None"
    edit(path, lambda d: d.update(version=1))
    assert refusal(path) == f"{path} holds a 'x', but a 'composite-public-key' is needed here"


def test_a_key_of_another_type_is_refused_naming_both(tmp_path: Path) -> None:
    write_all(tmp_path)
    other = tmp_path / "r.pub"
    assert refusal_with(load_verify_key, other) == (
        f"{other} holds a 'xwing-public-key', but a 'composite-public-key' is needed here"
    )
    private = tmp_path / "s.key"
    assert refusal_with(load_recipient_private_key, private) == (
        f"{private} holds a 'composite-signing-key', but a 'xwing-private-key' is needed here"
    )


def refusal_with(loader: Callable[[Path], Any], path: Path) -> str:
    with pytest.raises(KeyFileError) as caught:
        loader(path)
    return str(caught.value)


@pytest.mark.parametrize(("name", "field"), [("s.key", "private_key"), ("r.pub", "public_key")])
def test_key_material_must_be_strict_base64(tmp_path: Path, name: str, field: str) -> None:
    write_all(tmp_path)
    path = tmp_path / name
    edit(path, lambda d: d.update({field: d[field][:-4] + "!!!="}))
    if name.endswith(".key"):
        path.chmod(0o600)
    assert refusal(path) == f"{path}: {field} is not valid base64"


@pytest.mark.parametrize("name", ["s.key", "s.pub", "r.key", "r.pub"])
def test_key_material_of_the_wrong_size_is_refused(tmp_path: Path, name: str) -> None:
    write_all(tmp_path)
    path = tmp_path / name
    field = "private_key" if name.endswith(".key") else "public_key"
    edit(path, lambda d: d.update({field: base64.b64encode(b"\x01" * 7).decode()}))
    path.chmod(0o600)
    message = refusal(path)
    assert message.startswith(f"{path}: ")
    assert "base64" not in message
    assert "7" in message


def test_a_private_key_file_reads_only_its_private_field(tmp_path: Path) -> None:
    write_all(tmp_path)
    path = tmp_path / "s.key"
    public = base64.b64encode(SIGNING.public_key().public_bytes()).decode()
    edit(path, lambda d: d.update(public_key=public) or d.pop("private_key"))
    path.chmod(0o600)
    assert refusal(path) == f"{path}: composite private key must be 64 bytes, got 0"


@pytest.mark.parametrize(
    ("name", "field", "rule"),
    [
        ("s.pub", "public_key", "composite public key must be 1984 bytes"),
        ("r.key", "private_key", "X-Wing seed must be 32 bytes"),
        ("r.pub", "public_key", "X-Wing public key must be 1216 bytes"),
    ],
)
def test_missing_key_material_is_empty(tmp_path: Path, name: str, field: str, rule: str) -> None:
    write_all(tmp_path)
    path = tmp_path / name
    edit(path, lambda d: d.pop(field))
    path.chmod(0o600)
    assert refusal(path) == f"{path}: {rule}, got 0"


@pytest.mark.parametrize("name", ["s.key", "s.pub", "r.key", "r.pub"])
def test_a_key_id_that_does_not_match_the_key_is_damage(tmp_path: Path, name: str) -> None:
    write_all(tmp_path)
    path = tmp_path / name
    edit(path, lambda d: d.update(key_id="00" * 32))
    path.chmod(0o600)
    assert refusal(path) == f"{path}: key_id does not match the key material; the file is damaged"
    edit(path, lambda d: d.pop("key_id"))
    assert refusal(path) == f"{path}: key_id does not match the key material; the file is damaged"
