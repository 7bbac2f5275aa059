"""The one rollback rule (strictly greater, or the same version only for the same package),
the node's persistent high-water store, and the CLI's refusal of misnamed channels.

Attacks use the project's own API: two different, validly signed packages carrying the
same version; an older version; a mark typed for a misspelt or foreign channel.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode, main
from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.digest import sha256_file
from tensorguard.tgsp import (
    HighWaterMark,
    HighWaterStore,
    RollbackError,
    TrustStore,
    VerificationPolicy,
    open_package,
    verify_package,
)
from tensorguard.tgsp._errors import HighWaterMarkChannelError, HighWaterStoreError
from tensorguard.tgsp._keyfiles import write_key_file
from tensorguard.tgsp._rollback import check_rollback
from tests.tgsp.conftest import Packager


def test_rule_strictly_greater_or_the_same_package() -> None:
    digest_a, digest_b = "aa" * 32, "bb" * 32
    mark = HighWaterMark(5, digest_a)
    check_rollback("stable", 6, None, mark)
    check_rollback("stable", 5, digest_a, mark)
    check_rollback("stable", 1, None, None)
    for version, digest in ((5, digest_b), (5, None), (4, digest_a), (0, None)):
        with pytest.raises(RollbackError):
            check_rollback("stable", version, digest, mark)
    with pytest.raises(RollbackError, match="refusing a replay"):
        check_rollback("stable", 5, digest_a, HighWaterMark(5))  # a mark without a digest


def test_two_signed_packages_with_the_same_version(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    first = packager.build({"f": b"first"}, version=5)
    second = packager.build({"f": b"second"}, version=5)
    mark = HighWaterMark(5, sha256_file(first.path))
    policy = VerificationPolicy(high_water_marks={"stable": mark})
    verify_package(first.path, trust_store, policy)  # the installed package itself
    with pytest.raises(RollbackError, match="refusing a replay"):
        verify_package(second.path, trust_store, policy)
    destination = tmp_path / "second-out"
    with pytest.raises(RollbackError):
        open_package(
            second.path,
            destination,
            recipient_key=recipients[0],
            trust_store=trust_store,
            policy=policy,
        )
    assert not destination.exists()
    with pytest.raises(RollbackError):  # a bare version number accepts no equal version
        verify_package(first.path, trust_store, VerificationPolicy(high_water_marks={"stable": 5}))


def test_a_mark_for_another_channel_is_refused_when_marks_name_the_channel(
    packager: Packager, trust_store: TrustStore
) -> None:
    package = packager.build({"f": b"1"}, version=1)
    strict = VerificationPolicy(high_water_marks={"canary": 9}, marks_name_the_channel=True)
    with pytest.raises(HighWaterMarkChannelError, match="stable=VERSION"):
        verify_package(package.path, trust_store, strict)
    # a node's store names many channels: a channel without a mark is a first install
    verify_package(package.path, trust_store, VerificationPolicy(high_water_marks={"canary": 9}))


def test_store_records_raises_and_never_lowers(tmp_path: Path) -> None:
    store = HighWaterStore(tmp_path / "node" / "high-water.json")
    assert store.load() == {}
    store.record("stable", HighWaterMark(3, "aa" * 32))
    store.record("stable", HighWaterMark(3, "aa" * 32))  # the same package again
    store.record("canary", HighWaterMark(1, "cc" * 32))
    for lower in (HighWaterMark(2, "bb" * 32), HighWaterMark(3, "bb" * 32)):
        with pytest.raises(RollbackError):
            store.record("stable", lower)
    reread = HighWaterStore(store.path)
    assert reread.get("stable") == HighWaterMark(3, "aa" * 32)
    assert reread.get("canary") == HighWaterMark(1, "cc" * 32)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert not [p for p in store.path.parent.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{}",
        b'{"format": "tensorguard.high-water/v1", "channels": {"stable": {"version": "3"}}}',
        b'{"format": "tensorguard.high-water/v1", "channels": {"Stable": '
        b'{"version": 3, "package_digest": null}}}',
        b'{"format": "tensorguard.high-water/v1", "channels": {"stable": '
        b'{"version": -1, "package_digest": null}}}',
    ],
    ids=["empty", "no-format", "string-version", "bad-channel", "negative"],
)
def test_a_damaged_store_stops_instead_of_resetting(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "high-water.json"
    path.write_bytes(content)
    with pytest.raises(HighWaterStoreError, match="rollback protection depends on it"):
        HighWaterStore(path).load()


class Node:
    """Keys, a trust store and packages for the CLI tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        producer = CompositeSigningKey.generate()
        self.signing_key = root / "producer.key"
        self.recipient_key = root / "node.key"
        self.recipient_public = root / "node.pub"
        self.trust = root / "trust.json"
        recipient = XWingPrivateKey.generate()
        write_key_file(self.signing_key, producer)
        write_key_file(self.recipient_key, recipient)
        write_key_file(self.recipient_public, recipient.public_key())
        TrustStore([producer.public_key()]).save(self.trust)
        self.store = root / "state" / "high-water.json"
        self.count = 0

    def build(self, version: int, channel: str = "stable") -> Path:
        self.count += 1
        source = self.root / f"src{self.count}"
        source.mkdir()
        (source / "weights.bin").write_bytes(f"v{version}-{self.count}".encode())
        package = self.root / f"p{self.count}.tgsp"
        code = main(
            ["tgsp", "build", str(source), "-o", str(package), "--signing-key",
             str(self.signing_key), "--recipient", str(self.recipient_public), "--channel",
             channel, "--version", str(version), "--model-name", "tiny"]
        )  # fmt: skip
        assert code == ExitCode.OK
        return package

    def verify(self, package: Path, *extra: str) -> int:
        return main(["tgsp", "verify", str(package), "--trust-store", str(self.trust), *extra])

    def open(self, package: Path, *extra: str) -> int:
        self.count += 1
        return main(
            ["tgsp", "open", str(package), "-d", str(self.root / f"out{self.count}"),
             "--recipient-key", str(self.recipient_key), "--trust-store", str(self.trust),
             *extra]
        )  # fmt: skip


def test_cli_refuses_misnamed_and_foreign_channels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = Node(tmp_path)
    package = node.build(1)
    with pytest.raises(SystemExit) as usage:
        node.verify(package, "--high-water-mark", "Stable=2")
    assert usage.value.code == ExitCode.USAGE
    assert "lower-case" in capsys.readouterr().err
    assert node.verify(package, "--high-water-mark", "stabel=2") == ExitCode.CONFIG
    assert "package is on channel 'stable'" in capsys.readouterr().err
    assert node.verify(package, "--high-water-mark", "stable=0") == ExitCode.OK
    assert (
        node.verify(package, "--high-water-mark", "stable=0", "--high-water-mark", "stable=1")
        == ExitCode.CONFIG
    )


def test_cli_same_version_needs_the_same_package_digest(tmp_path: Path) -> None:
    node = Node(tmp_path)
    first, second = node.build(3), node.build(3)
    digest = sha256_file(first)
    assert node.verify(first, "--high-water-mark", f"stable=3:{digest}") == ExitCode.OK
    assert node.verify(second, "--high-water-mark", f"stable=3:{digest}") == ExitCode.POLICY
    assert node.verify(second, "--high-water-mark", "stable=3") == ExitCode.POLICY
    assert node.verify(second, "--high-water-mark", "stable=2") == ExitCode.OK


def test_cli_high_water_store_persists_across_runs(tmp_path: Path) -> None:
    node = Node(tmp_path)
    v2, v3, other_v3 = node.build(2), node.build(3), node.build(3)
    store = ["--high-water-store", str(node.store)]
    assert node.open(v3, *store) == ExitCode.OK
    assert HighWaterStore(node.store).get("stable") == HighWaterMark(3, sha256_file(v3))
    assert node.verify(v2, *store) == ExitCode.POLICY  # rollback
    assert node.open(v2, *store) == ExitCode.POLICY
    assert node.open(other_v3, *store) == ExitCode.POLICY  # replay of another v3
    assert node.open(v3, *store) == ExitCode.OK  # the same package again
    assert node.verify(node.build(4), *store) == ExitCode.OK
    canary = node.build(1, channel="canary")
    assert node.open(canary, *store) == ExitCode.OK  # first install on a new channel
    assert set(HighWaterStore(node.store).load()) == {"stable", "canary"}
    node.store.write_text("not json")
    assert node.verify(v3, *store) == ExitCode.INPUT
