"""JSON payloads exchanged over MQTT: release announcements, install reports, connection.

Each payload carries a ``format`` tag with its major version, and is validated
strictly on receipt (unknown fields rejected). Announcements are **not** trusted: the
edge agent uses them only to find a package; the package's own signature, checked
against the agent's pinned trust store, is the authority on what gets installed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from tensorguard._codec_schema import Sha256Hex
from tensorguard.fleet.errors import FleetError
from tensorguard.fleet.names import NAME_PATTERN
from tensorguard.gate.errors import describe_validation_error

Name = Annotated[str, Field(pattern=NAME_PATTERN.pattern)]
MAX_PAYLOAD_BYTES = 64 * 1024

MessageT = TypeVar("MessageT", bound="FleetMessage")


class MessageError(FleetError):
    """An MQTT payload is not a valid message of the expected kind."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


class FleetMessage(BaseModel):
    """Base of every fleet payload: strict, immutable, JSON on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_payload(self) -> bytes:
        """UTF-8 JSON encoding sent over MQTT."""
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_payload(cls: type[MessageT], payload: bytes) -> MessageT:
        """Parse and validate a payload; raise :class:`MessageError` if it is not one."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MessageError(
                f"{cls.__name__} payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
            )
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            raise MessageError(
                f"payload is not a valid {cls.__name__}: {describe_validation_error(exc)}"
            ) from exc


class ReleaseAnnouncement(FleetMessage):
    """A new release on a fleet channel: where to fetch it and what it should hash to."""

    format: Literal["tensorguard.release/v1"] = "tensorguard.release/v1"
    fleet: Name
    channel: Name
    version: Annotated[int, Field(ge=1)]
    digest: Sha256Hex
    size: Annotated[int, Field(ge=0)]
    location: Annotated[str, Field(min_length=1, max_length=4096)]
    created: AwareDatetime
    gate_decision_digest: Sha256Hex | None = None
    # the registry's signed freshness statement for the channel (tensorguard.tgsp._freshness)
    freshness: Annotated[str, Field(max_length=65_536)] | None = None


class InstallOutcome(StrEnum):
    """What an edge node did with a release."""

    INSTALLED = "installed"
    REJECTED = "rejected"
    FAILED = "failed"


class InstallReason(StrEnum):
    """Machine-readable reason codes carried in install reports."""

    INSTALLED = "installed"
    ROLLBACK = "rollback"
    FRESHNESS = "freshness"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNSIGNED = "unsigned"
    UNTRUSTED_SIGNER = "untrusted_signer"
    BAD_SIGNATURE = "bad_signature"
    NOT_A_RECIPIENT = "not_a_recipient"
    TAMPERED = "tampered"
    MALFORMED_PACKAGE = "malformed_package"
    UNSAFE_CONTENT = "unsafe_content"
    WRONG_CHANNEL = "wrong_channel"
    ANNOUNCEMENT_MISMATCH = "announcement_mismatch"
    DIGEST_MISMATCH = "digest_mismatch"
    UNSUPPORTED_LOCATION = "unsupported_location"
    FETCH_FAILED = "fetch_failed"
    INSTALL_FAILED = "install_failed"


class InstallReport(FleetMessage):
    """An edge node's result for one release announcement."""

    format: Literal["tensorguard.install-report/v1"] = "tensorguard.install-report/v1"
    fleet: Name
    channel: Name
    node_id: Name
    version: Annotated[int, Field(ge=1)]
    digest: Sha256Hex | None = None
    outcome: InstallOutcome
    reason_code: InstallReason
    reason: Annotated[str, Field(max_length=2048)]
    timestamp: AwareDatetime = Field(default_factory=utc_now)


class ConnectionState(StrEnum):
    """VDA 5050 connection states."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    CONNECTIONBROKEN = "CONNECTIONBROKEN"


class ConnectionMessage(FleetMessage):
    """A node's connection state (retained; the broken state is its last will)."""

    format: Literal["tensorguard.connection/v1"] = "tensorguard.connection/v1"
    fleet: Name
    node_id: Name
    state: ConnectionState
    timestamp: AwareDatetime = Field(default_factory=utc_now)
