"""The edge agent's durable state: per channel, the high-water version and what is installed.

Stored as ``state.json`` in the agent's state directory and replaced atomically (temp
file, fsync, rename, directory fsync). Rollback protection depends on this file, so a
state file that cannot be read or does not validate stops the agent (fail closed)
instead of being reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from tensorguard._codec_schema import Sha256Hex
from tensorguard.durable import DurableWriteError, atomic_write_bytes, ensure_directory
from tensorguard.fleet.errors import AgentError
from tensorguard.fleet.messages import Name

STATE_FILE = "state.json"


class ChannelState(BaseModel):
    """The installed release of one channel; its version is the channel's high-water mark."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_water_version: Annotated[int, Field(ge=1)]
    package_digest: Sha256Hex
    install_dir: str
    signer_key_id: Sha256Hex
    installed_at: AwareDatetime
    # set after a signed rollback order: the older version now running, while
    # high_water_version and package_digest stay those of the revoked release
    restored_version: Annotated[int, Field(ge=1)] | None = None

    @property
    def running_version(self) -> int:
        """The version installed now (the restored one after a rollback)."""
        return self.restored_version or self.high_water_version


class AgentState(BaseModel):
    """Every followed channel's installed release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tensorguard.agent-state/v1"] = "tensorguard.agent-state/v1"
    channels: dict[Name, ChannelState] = Field(default_factory=dict)
    # packages revoked by signed rollback orders, per channel ("<version>:<sha256>"):
    # never installed, whatever announces them
    revoked: dict[Name, tuple[str, ...]] = Field(default_factory=dict)

    def high_water(self, channel: str) -> int | None:
        """The highest version installed on ``channel``, or None before the first install."""
        entry = self.channels.get(channel)
        return None if entry is None else entry.high_water_version

    def with_channel(self, channel: str, entry: ChannelState) -> AgentState:
        """A copy with ``channel`` set to ``entry``."""
        return self.model_copy(update={"channels": {**self.channels, channel: entry}})

    def is_revoked(self, channel: str, version: int, digest: str) -> bool:
        """True when a signed rollback order revoked this package of ``channel``."""
        return f"{version}:{digest}" in self.revoked.get(channel, ())

    def with_revoked(self, channel: str, version: int, digest: str) -> AgentState:
        """A copy that records the revocation of this package of ``channel``."""
        if self.is_revoked(channel, version, digest):
            return self
        entries = (*self.revoked.get(channel, ()), f"{version}:{digest}")
        return self.model_copy(update={"revoked": {**self.revoked, channel: entries}})


class AgentStateStore:
    """Reads and atomically replaces ``state.json`` in the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    def load(self) -> AgentState:
        """The saved state; empty if the agent never installed anything."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return AgentState()
        except OSError as exc:
            raise AgentError(f"cannot read agent state {self.path}: {exc.strerror or exc}") from exc
        try:
            return AgentState.model_validate_json(data)
        except ValidationError as exc:
            raise AgentError(
                f"agent state {self.path} is damaged ({exc.error_count()} problems); refusing "
                "to run because rollback protection depends on it. Restore it from a backup, "
                "or remove it deliberately to accept any signed version again"
            ) from exc

    def save(self, state: AgentState) -> None:
        """Replace the state file atomically and durably."""
        try:
            ensure_directory(self.path.parent)
            atomic_write_bytes(self.path, state.model_dump_json(indent=2).encode("utf-8"))
        except DurableWriteError as exc:
            raise AgentError(f"cannot save agent state {self.path}: {exc}") from exc
