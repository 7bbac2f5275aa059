"""How an artifact names the base model it belongs to: an identifier and a digest.

A PEFT adapter records its base model in ``adapter_config.json``
(``base_model_name_or_path``). peft writes the local directory it loaded the model
from, which differs between machines and leaks the publisher's file-system layout. Every
adapter TensorGuard writes records a *base-model reference* instead::

    base-model@sha256:<64 hex digits>

where the digest is :func:`tensorguard.digest.sha256_tree` of the base model directory
(the ``base_model`` asset's digest, the round spec's ``base_model_digest`` and the TGSP
manifest's ``base_model`` identity). A reader resolves the reference through the
artifact store (the base model artifact with that digest), never through a path.
"""

from __future__ import annotations

import re
from typing import Final

BASE_MODEL_NAME: Final = "base-model"
"""The stable identifier of the federation's base model in references and manifests."""

_REFERENCE = re.compile(rf"^{re.escape(BASE_MODEL_NAME)}@sha256:(?P<digest>[0-9a-f]{{64}})$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ModelReferenceError(ValueError):
    """A base-model reference or digest is malformed."""


def base_model_reference(digest: str) -> str:
    """The reference ``base-model@sha256:<digest>`` for a base model's hex SHA-256."""
    if not _DIGEST.fullmatch(digest):
        raise ModelReferenceError(
            f"base model digest {digest!r} is not 64 lower-case hex characters (SHA-256 of "
            "the base model directory, as the base_model asset records it)"
        )
    return f"{BASE_MODEL_NAME}@sha256:{digest}"


def parse_base_model_reference(value: object) -> str:
    """The digest named by a reference from :func:`base_model_reference`.

    Raises :class:`ModelReferenceError` for anything else, a local path in particular.
    """
    match = _REFERENCE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ModelReferenceError(
            f"{value!r} is not a base-model reference ({BASE_MODEL_NAME}@sha256:<digest>); "
            "adapters must name their base model by digest, not by a local path"
        )
    return match["digest"]
