"""Exception types for the federation area (ceremony, site updates, aggregation)."""

from __future__ import annotations

from tensorguard.errors import TensorGuardError


class FederationError(TensorGuardError):
    """A federation step failed: key ceremony, site update, aggregation or decryption."""


class FederationParamsError(FederationError):
    """CKKS parameters are invalid or miss the required security level."""


class ContextError(FederationError):
    """A CKKS context is malformed, of the wrong kind (public vs secret) or mismatched."""


class LayoutError(FederationError):
    """Tensors do not match the round's expected names and shapes."""


class EncodingCapacityError(FederationError):
    """A value is too large to be encoded without overflowing the CKKS modulus."""


class CiphertextError(FederationError):
    """An encrypted payload does not parse or does not match the federation parameters."""


class PrivacyBudgetExceededError(FederationError):
    """Releasing another update would push a site past its differential-privacy budget."""


class PrivacyAccountingError(FederationError):
    """Differential-privacy parameters or a privacy ledger are invalid."""


class EnvelopeError(FederationError):
    """A signed site-update envelope is malformed, unsigned or fails verification."""


class QuorumNotMetError(FederationError):
    """Fewer valid site updates than the configured minimum: the round fails closed.

    ``rejections`` lists ``(site_id, reason)`` for every update that was refused, so a
    caller can report why the quorum was missed.
    """

    def __init__(self, message: str, rejections: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.rejections = rejections


class DecryptionError(FederationError):
    """The custodian could not decrypt an aggregate."""


class AdapterFormatError(FederationError):
    """A PEFT adapter directory or state dict is missing or inconsistent."""
