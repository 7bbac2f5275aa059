"""SIGKILL at random points of ``open_package`` and of an agent install.

Each kill hits a child process (tests/crash_child.py) a random time after it has loaded
everything; afterwards the result is always all-or-nothing: ``tgsp open``'s destination
is absent or complete, and the node's installed model is exactly the old release or
exactly the new one, never a mix, and the node installs the new one once restarted.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tensorguard.durable import TEMP_PREFIX
from tensorguard.fleet.agent import EdgeAgent
from tensorguard.fleet.messages import InstallOutcome, ReleaseAnnouncement
from tensorguard.tgsp import ModelIdentity, ReleaseInfo, build_package
from tests.fleet.releases import FleetKit
from tests.killable_child import run_killable_child

pytestmark = pytest.mark.slow

KILLS = 24
BIG_FILE = 4 * 1024 * 1024


def release_tree(root: Path, version: int) -> dict[str, bytes]:
    """Version-dependent contents, one large file so an install takes a while."""
    rng = random.Random(version)
    files = {
        "adapter/adapter_config.json": f'{{"r": 8, "version": {version}}}'.encode(),
        "adapter/adapter_model.safetensors": rng.randbytes(BIG_FILE),
        "gate_decision.json": f'{{"passed": true, "version": {version}}}'.encode(),
    }
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return files


def build_release(kit: FleetKit, version: int) -> tuple[Path, dict[str, bytes]]:
    source = kit.root / "big-sources" / f"v{version}"
    files = release_tree(source, version)
    output = kit.root / "big-built" / f"v{version}.tgsp"
    output.parent.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    build_package(
        source,
        output,
        signer=kit.keys.producer,
        recipients=[kit.keys.node.public_key()],
        release=ReleaseInfo(
            channel=kit.channel,
            version=version,
            created_at=now - 60,
            expires_at=now + 3600,
            model=ModelIdentity("demo-adapter", "ab" * 32),
            gate_decision_digest="cd" * 32,
        ),
    )
    return output, files


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def run_child(args: list[str], kill_after: float | None) -> tuple[bool, float | None]:
    """Run tests.crash_child; SIGKILL it ``kill_after`` s after it is ready.

    Returns (killed before it finished, duration the child reported).
    """
    return run_killable_child("tests.crash_child", args, kill_after)


def test_sigkilled_open_leaves_no_destination_or_a_complete_one(kit: FleetKit) -> None:
    package, files = build_release(kit, 1)
    out = kit.root / "opened"
    out.mkdir()

    def open_args(destination: Path) -> list[str]:
        return [
            "open",
            str(package),
            str(destination),
            str(kit.node_key_path),
            str(kit.trust_store_path),
        ]

    killed, duration = run_child(open_args(out / "calibration"), kill_after=None)
    assert not killed
    assert duration is not None
    rng = random.Random(20251218)
    outcomes = {"absent": 0, "complete": 0, "finished": 0, "staging_left": 0}
    for index in range(KILLS):
        destination = out / f"attempt-{index}"
        killed, _ = run_child(open_args(destination), kill_after=rng.uniform(0, duration * 1.3))
        if destination.exists():
            assert tree_files(destination) == files, f"attempt {index}: a partial tree"
            outcomes["complete" if killed else "finished"] += 1
        else:
            outcomes["absent"] += 1
        leftovers = [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]
        if leftovers:
            outcomes["staging_left"] += 1
        for path in out.iterdir():  # anything else is a published, complete tree
            assert path.name.startswith((TEMP_PREFIX, "attempt-", "calibration")), path
    print(f"\nopen kills: {outcomes}")
    assert outcomes["absent"] >= 3, outcomes  # kills did land before the publish


def _install_args(kit: FleetKit, state_dir: Path, announcement: ReleaseAnnouncement) -> list[str]:
    config_file = kit.root / "agent-config.json"
    config_file.write_text(
        json.dumps(
            {
                "node_id": "robot-1",
                "fleet": kit.fleet,
                "channels": [kit.channel],
                "state_dir": str(state_dir),
                "trust_store": str(kit.trust_store_path),
                "recipient_key_file": str(kit.node_key_path),
            }
        )
    )
    announcement_file = kit.root / "announcement.json"
    announcement_file.write_bytes(announcement.to_payload())
    return ["install", str(config_file), str(announcement_file)]


def _installed(agent: EdgeAgent, channel: str) -> dict[str, bytes]:
    current = agent.layout.current_link(channel)
    return tree_files(current) if current.exists() else {}


def test_sigkilled_agent_install_leaves_the_old_or_the_new_model(kit: FleetKit) -> None:
    state_dir = kit.root / "node"
    releases = {version: build_release(kit, version) for version in range(1, KILLS + 3)}
    announcements = {v: kit.publish(package, v) for v, (package, _) in releases.items()}
    first = kit.agent(state_dir).handle_release(announcements[1])
    assert first is not None
    assert first.outcome is InstallOutcome.INSTALLED
    killed, duration = run_child(_install_args(kit, state_dir, announcements[2]), None)
    assert not killed
    assert duration is not None
    rng = random.Random(20251219)
    outcomes = {"old": 0, "new": 0, "finished": 0}
    installed_version = 2
    for _ in range(KILLS):
        new_version = installed_version + 1
        args = _install_args(kit, state_dir, announcements[new_version])
        killed, _ = run_child(args, kill_after=rng.uniform(0, duration * 1.3))
        agent = kit.agent(state_dir)  # the node restarts
        agent.recover()
        installed = _installed(agent, kit.channel)
        old_files, new_files = releases[installed_version][1], releases[new_version][1]
        assert installed in (old_files, new_files), "the installed model is a mix"
        if not killed:
            outcomes["finished"] += 1
        else:
            outcomes["old" if installed == old_files else "new"] += 1
        # Recovery keeps only the linked release and the one the state names.
        entry = agent.state.channels[kit.channel]
        kept = {agent.layout.current_target(kit.channel), state_dir / entry.install_dir}
        assert set((agent.layout.releases / kit.channel).iterdir()) <= kept
        # The restarted node, offered the release again, ends on it (installing it again
        # if the kill came before the switch or before the state was saved).
        report = agent.handle_release(announcements[new_version])
        assert report is None or report.outcome is InstallOutcome.INSTALLED, report
        assert _installed(agent, kit.channel) == new_files
        assert agent.state.high_water(kit.channel) == new_version
        installed_version = new_version
    print(f"\ninstall kills: {outcomes}")
    assert outcomes["old"] >= 3, outcomes  # kills did land before the switch
