"""The base of the gate's documents: policy, evidence and decision hash the same way."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from tensorguard.codec import canonical_digest, canonical_json


class CanonicalModel(BaseModel):
    """A pydantic model identified by the RFC 8785 canonical JSON of its JSON dump.

    Fields named in ``omitted_when_absent`` (optional sections added after a format
    shipped) are left out of the dump while ``None``, so documents without them keep
    the bytes and digests they had before the section existed.
    """

    omitted_when_absent: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_absent_sections(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.omitted_when_absent:
                if data.get(name, 0) is None:
                    del data[name]
        return data

    def canonical_json(self) -> bytes:
        """RFC 8785 canonical JSON of the whole document (what gets packaged and hashed)."""
        return canonical_json(self.model_dump(mode="json"))

    def digest(self) -> str:
        """Hex SHA-256 of :meth:`canonical_json`."""
        return canonical_digest(self.model_dump(mode="json"))
