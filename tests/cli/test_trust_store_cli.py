"""`tensorguard trust-store create|add|remove`: the store verifiers load, changed safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.crypto._composite import CompositeSigningKey, CompositeVerifyKey
from tensorguard.crypto._xwing import XWingPrivateKey
from tensorguard.tgsp._keyfiles import write_key_file
from tensorguard.tgsp._trust import TrustStore


@pytest.fixture(scope="module")
def keys() -> dict[str, CompositeVerifyKey]:
    return {name: CompositeSigningKey.generate().public_key() for name in ("old", "new", "next")}


def _key_files(tmp_path: Path, keys: dict[str, CompositeVerifyKey]) -> dict[str, Path]:
    files = {}
    for name, key in keys.items():
        files[name] = tmp_path / f"release-{name}.pub"
        write_key_file(files[name], key)
    return files


def _pinned(store: Path) -> dict[str, str | None]:
    loaded = TrustStore.load(store)
    return {key.fingerprint(): loaded.label(key.fingerprint()) for key in loaded}


def test_create_add_remove_round_trip(
    tmp_path: Path, keys: dict[str, CompositeVerifyKey], capsys: pytest.CaptureFixture[str]
) -> None:
    files = _key_files(tmp_path, keys)
    store = tmp_path / "nodes" / "trust-store.json"
    store.parent.mkdir()
    assert main(["trust-store", "create", str(store), str(files["old"])]) == ExitCode.OK
    assert _pinned(store) == {keys["old"].fingerprint(): "release-old"}

    argv = ["trust-store", "add", str(store), str(files["new"]), "--label", "release-2027"]
    assert main(argv) == ExitCode.OK
    assert _pinned(store) == {
        keys["old"].fingerprint(): "release-old",
        keys["new"].fingerprint(): "release-2027",
    }
    assert main(["trust-store", "remove", str(store), "release-old"]) == ExitCode.OK
    assert _pinned(store) == {keys["new"].fingerprint(): "release-2027"}
    assert f"unpinned {keys['old'].fingerprint()}" in capsys.readouterr().out

    assert main(["trust-store", "add", str(store), str(files["next"])]) == ExitCode.OK
    prefix = keys["next"].fingerprint()[:12]
    assert main(["trust-store", "remove", str(store), prefix]) == ExitCode.OK
    assert list(_pinned(store)) == [keys["new"].fingerprint()]


def test_refusals_leave_the_store_unchanged(
    tmp_path: Path, keys: dict[str, CompositeVerifyKey]
) -> None:
    files = _key_files(tmp_path, keys)
    store = tmp_path / "trust-store.json"
    argv = ["trust-store", "create", str(store), str(files["old"]), str(files["new"])]
    assert main([*argv, "--label", "a", "--label", "b"]) == ExitCode.OK
    before = store.read_bytes()
    kem_file = tmp_path / "node.xwing.pub"
    write_key_file(kem_file, XWingPrivateKey.generate().public_key())
    refused = [
        ["trust-store", "create", str(store), str(files["next"])],  # exists
        ["trust-store", "add", str(store), str(files["old"])],  # already pinned
        ["trust-store", "add", str(store), str(kem_file)],  # not a signing key
        ["trust-store", "add", str(store), str(tmp_path / "missing.pub")],
        ["trust-store", "remove", str(store), "no-such-label"],
        ["trust-store", "remove", str(store), keys["next"].fingerprint()],  # not pinned
    ]
    for command in refused:
        assert main(command) == ExitCode.INPUT, command
        assert store.read_bytes() == before, command
    assert main(["trust-store", "remove", str(store), "a"]) == ExitCode.OK
    assert main(["trust-store", "remove", str(store), "b"]) == ExitCode.INPUT  # the last key
    assert list(_pinned(store)) == [keys["new"].fingerprint()]
