"""Local directory registry: atomic publish, monotonic versions, crash safety."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from tensorguard.digest import sha256_file
from tensorguard.fleet.errors import (
    FleetNameError,
    RegistryCorruptError,
    RegistryError,
    ReleaseVersionError,
)
from tensorguard.fleet.registry import INDEX_NAME, LOCK_NAME, LocalRegistry
from tensorguard.service.packages import PackageStore
from tests.killable_child import run_killable_child


def make_package(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def registry_files(root: Path) -> set[str]:
    """Every regular file in the registry except the lock, as relative POSIX paths."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != LOCK_NAME
    }


def test_publish_copies_hashes_and_indexes(tmp_path: Path) -> None:
    package = make_package(tmp_path / "round-1.tgsp", 300_000)
    registry = LocalRegistry(tmp_path / "registry")
    record = registry.publish(package, "stable", 1, {"round": "2025-01-01"})
    assert record.digest == sha256_file(package)
    assert record.size == 300_000
    assert registry.package_path(record).read_bytes() == package.read_bytes()
    assert registry.package_path(record).name == "stable-1.tgsp"
    assert registry.location(record) == registry.package_path(record).as_uri()
    assert registry.location(record).startswith("file:///")
    assert package.exists(), "publishing copies, it never moves the source"
    assert registry.latest("stable") == record
    assert registry.channels() == ["stable"]
    index = json.loads((tmp_path / "registry" / INDEX_NAME).read_text())
    assert index["channels"]["stable"][0]["digest"] == record.digest
    assert index["channels"]["stable"][0]["metadata"] == {"round": "2025-01-01"}
    registry.verify(record)
    assert registry_files(tmp_path / "registry") == {INDEX_NAME, "packages/stable/stable-1.tgsp"}


def test_versions_strictly_increase_per_channel(tmp_path: Path) -> None:
    package = make_package(tmp_path / "p.tgsp", 1000)
    registry = LocalRegistry(tmp_path / "registry")
    registry.publish(package, "stable", 5)
    for refused in (5, 4, 1):
        with pytest.raises(ReleaseVersionError, match="already has version 5") as raised:
            registry.publish(package, "stable", refused)
        assert "publish version 6 or higher" in str(raised.value)
    registry.publish(package, "canary", 1)  # channels are independent
    registry.publish(package, "stable", 9)  # gaps are allowed
    assert [r.version for r in registry.releases("stable")] == [5, 9]
    assert [r.version for r in registry.releases("canary")] == [1]
    assert registry.releases("nightly") == []
    assert registry.latest("nightly") is None


def test_an_older_round_is_indexed_archived_and_never_latest(tmp_path: Path) -> None:
    package = make_package(tmp_path / "p.tgsp", 1000)
    registry = LocalRegistry(tmp_path / "registry")
    registry.publish(package, "stable", 1, round_id="2026-12-01")
    registry.publish(package, "stable", 2, round_id="2026-11-30")  # a backfill
    registry.publish(package, "stable", 3, round_id="2026-12-01")  # the same round again
    registry.publish(package, "stable", 4)  # round unknown: never archived
    with pytest.raises(ReleaseVersionError, match="already has version 4"):
        registry.publish(package, "stable", 4, round_id="2026-12-02")
    reread = LocalRegistry(tmp_path / "registry")  # what the index file says
    assert [(r.version, r.round_id, r.archived) for r in reread.releases("stable")] == [
        (1, "2026-12-01", False),
        (2, "2026-11-30", True),
        (3, "2026-12-01", False),
        (4, None, False),
    ]
    registry.publish(package, "stable", 5, round_id="2026-12-02")
    assert registry.publish(package, "stable", 6, round_id="2026-12-01").archived
    latest = reread.latest("stable")
    assert latest is not None
    assert (latest.version, latest.round_id) == (5, "2026-12-02")
    assert reread.highest_version("stable") == 6
    assert reread.highest_version("canary") == 0


def test_an_index_written_before_rounds_were_recorded_still_reads(tmp_path: Path) -> None:
    package = make_package(tmp_path / "p.tgsp", 1000)
    registry = LocalRegistry(tmp_path / "registry")
    registry.publish(package, "stable", 1, round_id="2026-12-01")
    index_path = tmp_path / "registry" / INDEX_NAME
    index = json.loads(index_path.read_text())
    for record in index["channels"]["stable"]:
        del record["round_id"], record["archived"]
    index_path.write_text(json.dumps(index))
    [record] = registry.releases("stable")
    assert (record.round_id, record.archived) == (None, False)
    assert registry.latest("stable") == record
    # Without a recorded round for the latest release, nothing counts as a backfill.
    assert not registry.publish(package, "stable", 2, round_id="2020-01-01").archived


@pytest.mark.parametrize("version", [0, -1, True])
def test_invalid_versions_are_refused(tmp_path: Path, version: int) -> None:
    package = make_package(tmp_path / "p.tgsp", 10)
    with pytest.raises(ReleaseVersionError, match="positive integer"):
        LocalRegistry(tmp_path / "r").publish(package, "stable", version)


@pytest.mark.parametrize("channel", ["", "../etc", "a/b", "a+b", "#", ".hidden", "x" * 65])
def test_unsafe_channel_names_are_refused(tmp_path: Path, channel: str) -> None:
    package = make_package(tmp_path / "p.tgsp", 10)
    with pytest.raises(FleetNameError, match="channel name"):
        LocalRegistry(tmp_path / "r").publish(package, channel, 1)


def test_missing_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        LocalRegistry(tmp_path / "r").publish(tmp_path / "absent.tgsp", "stable", 1)


def test_tampered_package_and_corrupt_index_are_detected(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "r")
    record = registry.publish(make_package(tmp_path / "p.tgsp", 5000), "stable", 1)
    path = registry.package_path(record)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryCorruptError, match="does not match"):
        registry.verify(record)
    registry.index_path.write_text('{"format": "tensorguard.registry-index/v1", "channels": 3}')
    with pytest.raises(RegistryCorruptError, match="does not validate"):
        registry.latest("stable")


def test_a_missing_package_file_is_named_or_described(tmp_path: Path) -> None:
    """The registry names the missing file; the service's store (its message reaches the
    client) describes it without the server's path."""
    registry = LocalRegistry(tmp_path / "r")
    record = registry.publish(make_package(tmp_path / "p.tgsp", 5000), "stable", 1)
    path = registry.package_path(record)
    path.unlink()
    with pytest.raises(RegistryCorruptError) as named:
        registry.verify(record)
    assert str(named.value).startswith(f"release stable v1: package {path} is unreadable (")
    with pytest.raises(RegistryCorruptError) as described:
        PackageStore(tmp_path / "r").find("stable", 1)
    assert str(described.value).startswith("release stable v1: its package file is unreadable (")
    assert str(tmp_path) not in str(described.value)


def test_recover_removes_only_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "r"
    registry = LocalRegistry(root)
    registry.publish(make_package(tmp_path / "p.tgsp", 100), "stable", 1)
    before = registry_files(root)
    leftovers = [
        root / ".tmp-index",
        root / "packages" / "stable" / ".tmp-abc",
        root / "packages" / "stable" / "stable-2.tgsp",  # renamed but never indexed
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    removed = registry.recover()
    assert sorted(removed) == sorted(leftovers)
    assert registry_files(root) == before
    assert registry.recover() == []


def test_concurrent_publishers_never_share_a_version(tmp_path: Path) -> None:
    package = make_package(tmp_path / "p.tgsp", 20_000)
    registry = LocalRegistry(tmp_path / "r")
    outcomes: list[str] = []

    def publish(version: int) -> None:
        try:
            LocalRegistry(tmp_path / "r").publish(package, "stable", version)
            outcomes.append("ok")
        except ReleaseVersionError:
            outcomes.append("refused")

    threads = [threading.Thread(target=publish, args=(v,)) for v in (1, 1, 1, 2, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = [r.version for r in registry.releases("stable")]
    assert versions == sorted(set(versions))
    assert outcomes.count("ok") == len(versions)
    assert versions in ([1, 2], [2])


def _run_publisher(
    root: Path, package: Path, version: int, kill_after: float | None
) -> tuple[bool, float | None]:
    """Run the publisher child; SIGKILL it ``kill_after`` s after it is ready.

    Returns (killed before finishing, publish duration reported by the child).
    """
    return run_killable_child(
        "tests.fleet.registry_publisher",
        [str(root), str(package), "stable", str(version)],
        kill_after,
        timeout=60,
    )


def test_sigkilled_publisher_leaves_registry_unchanged_or_complete(tmp_path: Path) -> None:
    """Kill a publishing process at random points; the registry is never partial."""
    root = tmp_path / "registry"
    registry = LocalRegistry(root)
    package = make_package(tmp_path / "big.tgsp", 8 * 1024 * 1024, seed=7)
    package_digest = sha256_file(package)
    # Calibrate: how long does one publish take on this machine?
    killed, duration = _run_publisher(root, package, 1, kill_after=None)
    assert not killed
    assert duration is not None
    window = duration * 1.3
    rng = random.Random(20250101)
    # killed before writing anything / killed mid-publish (debris that recover() removes) /
    # killed after the index named the package / not killed (it finished first)
    outcomes = {"untouched": 0, "mid_publish": 0, "committed": 0, "finished": 0}
    deadline = time.monotonic() + 90
    iterations = 0
    while iterations < 40 and time.monotonic() < deadline:
        iterations += 1
        before_index = registry.read_index()
        before_files = registry_files(root)
        latest = before_index.channels["stable"][-1].version
        killed, _ = _run_publisher(root, package, latest + 1, kill_after=rng.uniform(0, window))

        after_index = registry.read_index()  # must parse: the index is never partial
        if after_index != before_index:
            new = after_index.channels["stable"]
            assert new[:-1] == before_index.channels["stable"]
            assert new[-1].version == latest + 1
            assert new[-1].digest == package_digest
        for record in after_index.channels["stable"]:
            registry.verify(record)  # every indexed package is complete
        removed = registry.recover()
        expected = (
            before_files
            if after_index == before_index
            else (before_files | {after_index.channels["stable"][-1].path})
        )
        assert registry_files(root) == expected
        if not killed:
            outcomes["finished"] += 1
        elif after_index != before_index:
            outcomes["committed"] += 1
        elif removed:
            outcomes["mid_publish"] += 1
        else:
            outcomes["untouched"] += 1
    assert iterations >= 30
    # The next publish after all those crashes succeeds.
    latest_record = registry.latest("stable")
    assert latest_record is not None
    killed, _ = _run_publisher(root, package, latest_record.version + 1, kill_after=None)
    assert not killed
    assert [r.version for r in registry.releases("stable")][-2:] == [
        latest_record.version,
        latest_record.version + 1,
    ]
    # The kills must have landed inside publishes, not only before or after them.
    assert outcomes["mid_publish"] >= 3, outcomes
