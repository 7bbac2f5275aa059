"""The key custodian: decrypt only the aggregate, normalise, rebuild the adapter.

The custodian never sees a single site's ciphertext: it receives the aggregator's
:class:`AggregationResult`, decrypts the summed vector with the secret context and
divides by the total of the weights that went in (each site encrypted
``delta · weight / max_site_weight``), which yields the weighted FedAvg of the deltas.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tensorguard.federation.aggregation import AggregationResult
from tensorguard.federation.context import SecretFederation
from tensorguard.federation.errors import CiphertextError, DecryptionError
from tensorguard.federation.packing import decrypt_vector, load_encrypted_vector

MIN_AGGREGATED_SITES = 2


def decrypt_aggregate(
    aggregate: AggregationResult, secret: SecretFederation, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The weighted mean delta, by tensor name, from an aggregation result."""
    if aggregate.public_context_sha256 != secret.public.digest:
        raise DecryptionError(
            "the aggregate was encrypted under another federation key than this "
            "custodian's; load the secret context from the matching ceremony"
        )
    if len(aggregate.accepted) < MIN_AGGREGATED_SITES:
        raise DecryptionError(
            f"refusing to decrypt an aggregate of {len(aggregate.accepted)} site(s): it "
            "would reveal an individual site's update"
        )
    layout = aggregate.spec.tensor_layout
    try:
        encrypted = load_encrypted_vector(
            aggregate.payload, secret.context, secret.public.params, layout.numel
        )
    except CiphertextError as exc:
        raise DecryptionError(f"the aggregate ciphertext is invalid: {exc}") from exc
    summed = decrypt_vector(encrypted, secret.context)
    encoded_weight = aggregate.total_weight / aggregate.spec.max_site_weight
    if not encoded_weight > 0:
        raise DecryptionError("the aggregate records no positive total weight")
    return layout.unflatten(summed / encoded_weight, dtype)


def apply_update(
    reference: Mapping[str, torch.Tensor], mean_delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The next global adapter: ``reference + mean_delta`` in the reference's dtypes."""
    if set(reference) != set(mean_delta):
        raise DecryptionError(
            "the decrypted update and the reference adapter hold different tensors"
        )
    updated: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        delta = mean_delta[name]
        if delta.shape != tensor.shape:
            raise DecryptionError(f"tensor {name!r}: update shape {tuple(delta.shape)} differs")
        summed = tensor.detach().to(torch.float64) + delta.to(torch.float64)
        updated[name] = summed.to(tensor.dtype).contiguous()
    return updated
