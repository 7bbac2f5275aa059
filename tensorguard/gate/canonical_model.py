"""The base of the gate's documents: policy, evidence and decision hash the same way."""

from __future__ import annotations

from pydantic import BaseModel

from tensorguard.codec import canonical_digest, canonical_json


class CanonicalModel(BaseModel):
    """A pydantic model identified by the RFC 8785 canonical JSON of its JSON dump."""

    def canonical_json(self) -> bytes:
        """RFC 8785 canonical JSON of the whole document (what gets packaged and hashed)."""
        return canonical_json(self.model_dump(mode="json"))

    def digest(self) -> str:
        """Hex SHA-256 of :meth:`canonical_json`."""
        return canonical_digest(self.model_dump(mode="json"))
