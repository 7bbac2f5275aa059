"""The key custodian: verify, then decrypt one aggregate per round, then check it.

The custodian holds the CKKS secret and must not become the party that can read a
single site. So it never trusts the aggregator's word; :class:`Custodian` decrypts only
after it has

1. recomputed the homomorphic sum itself from the signed site envelopes (it checks every
   signature and round rule exactly as the aggregator does) and found the aggregator's
   result identical: same contributors, same weights, same ciphertext bytes. A
   hand-written "aggregate" that holds one site's ciphertext, or a sum into which the
   aggregator slipped its own vector, differs and is refused;
2. found at least the round's quorum of contributors (never fewer than two) and, in a
   masked round where sites dropped out, every survivor's signed seed reveal for the
   dropped sites (without them the surviving masks do not cancel);
3. recorded the decryption in its signed, append-only :class:`CustodianLedger`, which
   refuses a second, different aggregate of the same round (the difference of two
   aggregates would reveal a site).

In a round with a fixed-point grid (``spec.aggregate_grid_bits``) it first rounds the
decrypted sum to that grid, which recovers the sites' exact sum (they quantised before
encrypting; :mod:`tensorguard.federation._fixed_point`), so the global adapter does not
depend on the encryption randomness. After decrypting it divides by the total weight
(each site encrypted ``delta · weight / max_site_weight``), which yields the weighted
FedAvg of the deltas, and checks the result's L2 norm against the round's clip norm: a
weighted mean of deltas each clipped to ``C`` has norm at most ``C``. What it cannot
check is any single site's content norm (the ciphertexts are opaque without
zero-knowledge proofs); the aggregate norm check is the mitigation for a site that
encrypted more than it declared.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from tensorguard.crypto import CompositeVerifyKey
from tensorguard.federation._accountant import gaussian_epsilon
from tensorguard.federation._aggregation import AggregationResult, aggregate_updates
from tensorguard.federation._context import SecretFederation
from tensorguard.federation._custodian_ledger import CustodianLedger, DecryptionRecord
from tensorguard.federation._envelope import SealedEnvelope
from tensorguard.federation._errors import (
    CiphertextError,
    DecryptionError,
    EnvelopeError,
    QuorumNotMetError,
)
from tensorguard.federation._fixed_point import (
    check_grid_bits,
    check_on_grid,
    quantisation_error_bound,
)
from tensorguard.federation._layout import tensors_digest
from tensorguard.federation._masking import RevealedMasks, mask_level, unmask_aggregate
from tensorguard.federation._packing import decrypt_vector, load_encrypted_vector
from tensorguard.federation._pairwise import PairwiseError, collect_revealed_seeds
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._server_optimizer import (
    ServerOptimizerRule,
    ServerOptimizerState,
    server_step,
)

MIN_AGGREGATED_SITES = 2
NORM_TOLERANCE = 1e-6
"""Relative slack on the aggregate norm bound, far above CKKS error (~1e-9)."""


class AggregateMismatchError(DecryptionError):
    """The aggregator's result differs from the sum the custodian recomputed."""


class AggregateNormError(DecryptionError):
    """The decrypted mean update is longer than the round's clip norm allows."""


@dataclass(frozen=True)
class CustodianDecryption:
    """The decrypted weighted-mean delta and what the custodian checked."""

    mean_delta: dict[str, torch.Tensor]
    record: DecryptionRecord
    l2_norm: float
    norm_bound: float | None
    dp_epsilon: tuple[float, float] | None = None
    """(ε of this round's release, ε of every DP release in the ledger) at the round's δ."""

    def metadata(self) -> dict[str, object]:
        """Plain values for logs and metadata (no plaintext of the update)."""
        values: dict[str, object] = {
            "contributors": list(self.record.contributors),
            "aggregate_sha256": self.record.aggregate_sha256,
            "decrypted_at": self.record.decrypted_at.isoformat(),
            "mean_update_l2_norm": self.l2_norm,
            "norm_bound": self.norm_bound,
        }
        if self.dp_epsilon is not None:
            values["dp_epsilon_round"], values["dp_epsilon_total"] = self.dp_epsilon
        return values


class Custodian:
    """The only holder of the CKKS secret; decrypts verified aggregates, once a round."""

    def __init__(
        self,
        secret: SecretFederation,
        registered_site_keys: Mapping[str, CompositeVerifyKey],
        ledger: CustodianLedger,
    ) -> None:
        self._secret = secret
        self._site_keys = dict(registered_site_keys)
        self._ledger = ledger

    def decrypt(
        self,
        aggregate: AggregationResult,
        envelopes: Sequence[bytes],
        dtype: torch.dtype = torch.float32,
        reveals: Sequence[bytes] = (),
    ) -> CustodianDecryption:
        """Verify ``aggregate`` against ``envelopes``, record, decrypt and check it.

        In a masked round (``spec.mask_epoch``) where roster sites dropped out,
        ``reveals`` must hold every survivor's signed seed reveal for the dropped sites,
        so that their uncancelled masks can be removed; they are verified first.
        """
        if aggregate.public_context_sha256 != self._secret.public.digest:
            raise DecryptionError(
                "the aggregate was encrypted under another federation key than this "
                "custodian's; load the secret context from the matching ceremony"
            )
        if len(aggregate.accepted) < max(MIN_AGGREGATED_SITES, aggregate.spec.min_sites):
            raise DecryptionError(
                f"refusing to decrypt an aggregate of {len(aggregate.accepted)} site(s): "
                f"below the round's quorum of {aggregate.spec.min_sites}, it could reveal an "
                "individual site's update"
            )
        self._refuse_unaccepted(aggregate, envelopes)
        self._check_recomputed(aggregate, envelopes)
        revealed = self._revealed_seeds(aggregate, reveals)
        spec = aggregate.spec
        record = self._ledger.authorise(
            round_id=spec.round_id,
            public_context_sha256=aggregate.public_context_sha256,
            contributors=[update.site_id for update in aggregate.accepted],
            aggregate_sha256=hashlib.sha256(aggregate.payload).hexdigest(),
            dp_noise_multiplier=spec.dp.noise_multiplier if spec.dp is not None else None,
        )
        dp_epsilon = (
            (
                gaussian_epsilon(spec.dp.noise_multiplier, 1.0, 1, spec.dp.delta),
                self._ledger.epsilon(spec.dp.delta),
            )
            if spec.dp is not None
            else None
        )
        mean_delta = _decrypt_mean(aggregate, self._secret, dtype, revealed)
        norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in mean_delta.values()))
        bound = _norm_bound(spec)
        if bound is not None and norm > bound * (1 + NORM_TOLERANCE) + _rounding_slack(aggregate):
            raise AggregateNormError(
                f"round {aggregate.spec.round_id!r}: the decrypted mean update has L2 norm "
                f"{norm:.6g}, above the clip norm {bound:.6g} every site had to respect; a "
                "site encrypted more than it declared. The result is withheld; find the site "
                "by re-running the round without suspected sites"
            )
        return CustodianDecryption(mean_delta, record, norm, bound, dp_epsilon)

    @staticmethod
    def _refuse_unaccepted(aggregate: AggregationResult, envelopes: Sequence[bytes]) -> None:
        """Take only the accepted envelopes: a rejected site's masks are removed with the
        survivors' seed reveals, so its ciphertext must never reach the secret key."""
        accepted = {update.envelope_sha256 for update in aggregate.accepted}
        extra = sum(1 for raw in envelopes if envelope_digest(raw) not in accepted)
        if extra:
            raise DecryptionError(
                f"{extra} envelope(s) given to the custodian are not among the aggregate's "
                "accepted updates; the custodian takes only accepted envelopes, because a "
                "rejected site's ciphertext could be unmasked with the seed reveals"
            )

    def _revealed_seeds(
        self, aggregate: AggregationResult, reveals: Sequence[bytes]
    ) -> RevealedMasks | None:
        spec = aggregate.spec
        if spec.mask_epoch is None:
            return None
        accepted = [update.site_id for update in aggregate.accepted]
        try:
            return collect_revealed_seeds(
                reveals,
                epoch_id=spec.mask_epoch,
                round_id=spec.round_id,
                roster=spec.roster,
                accepted=accepted,
                signing_keys=self._site_keys,
            )
        except PairwiseError as exc:
            dropped = sorted(set(spec.roster) - set(accepted))
            raise DecryptionError(
                f"round {spec.round_id!r}: the sum stays masked (accepted: "
                f"{', '.join(sorted(accepted))}; dropped: {', '.join(dropped) or 'none'}): "
                f"{exc}. Collect each accepted site's seed reveal (its self seed and its "
                "seeds with the dropped sites)"
            ) from exc

    def _check_recomputed(self, aggregate: AggregationResult, envelopes: Sequence[bytes]) -> None:
        spec = aggregate.spec
        try:
            mine = aggregate_updates(
                envelopes, self._site_keys, spec, self._secret.public, spec.min_sites
            )
        except QuorumNotMetError as exc:
            raise AggregateMismatchError(
                f"the signed site envelopes do not reach the round's quorum: {exc}"
            ) from exc
        if mine.accepted != aggregate.accepted:
            theirs = ", ".join(u.site_id for u in aggregate.accepted)
            ours = ", ".join(u.site_id for u in mine.accepted)
            raise AggregateMismatchError(
                f"the aggregator's contributor list ({theirs}) differs from the custodian's "
                f"verification of the signed envelopes ({ours}); refusing to decrypt"
            )
        if mine.payload != aggregate.payload:
            raise AggregateMismatchError(
                "the aggregator's ciphertext differs from the sum of the signed site "
                "envelopes the custodian recomputed; the aggregate was altered or a vector "
                "was added to it. Refusing to decrypt"
            )


def envelope_digest(raw: bytes) -> str | None:
    """The digest an aggregate records for an envelope (None if it does not parse)."""
    try:
        return SealedEnvelope.from_bytes(raw).digest
    except EnvelopeError:
        return None


def _norm_bound(spec: RoundSpec) -> float | None:
    """The clip norm the mean must respect, or None when it is not bounded by it.

    With the round's DP rule on, sites add Gaussian noise after clipping, so the mean is
    not bounded by the clip norm and the check is skipped (and reported as such). The
    rule comes from the coordinator's signed spec, never from a site's own header, so a
    site cannot switch the check off by declaring DP.
    """
    return None if spec.clip_norm is None or spec.dp is not None else spec.clip_norm


def _rounding_slack(aggregate: AggregationResult) -> float:
    """How much the sites' rounding to the round's grid can lengthen the mean update."""
    spec = aggregate.spec
    if spec.aggregate_grid_bits is None:
        return 0.0
    encoded_weight = aggregate.total_weight / spec.max_site_weight
    error = quantisation_error_bound(
        spec.aggregate_grid_bits, len(aggregate.accepted), spec.tensor_layout.numel
    )
    return error / encoded_weight if encoded_weight > 0 else math.inf


def _decrypt_mean(
    aggregate: AggregationResult,
    secret: SecretFederation,
    dtype: torch.dtype,
    revealed: RevealedMasks | None,
) -> dict[str, torch.Tensor]:
    layout = aggregate.spec.tensor_layout
    params = secret.public.params
    try:
        encrypted = load_encrypted_vector(
            aggregate.payload,
            secret.context,
            params,
            layout.numel,
            packing=aggregate.spec.ckks_packing,
        )
        if revealed is not None:
            encrypted = unmask_aggregate(encrypted, revealed, mask_level(secret.context, params))
    except CiphertextError as exc:
        raise DecryptionError(f"the aggregate ciphertext is invalid: {exc}") from exc
    summed = decrypt_vector(encrypted, secret.context)
    bits = aggregate.spec.aggregate_grid_bits
    if bits is not None:
        summed = check_on_grid(summed, check_grid_bits(params, bits, layout.numel))
    encoded_weight = aggregate.total_weight / aggregate.spec.max_site_weight
    if not encoded_weight > 0:
        raise DecryptionError("the aggregate records no positive total weight")
    return layout.unflatten(summed / encoded_weight, dtype)


def apply_update(
    reference: Mapping[str, torch.Tensor], mean_delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The next global adapter: ``reference + mean_delta`` in the reference's dtypes.

    Tensors the update does not cover (frozen LoRA A factors) are the reference's."""
    unknown = sorted(set(mean_delta) - set(reference))
    if unknown or not mean_delta:
        raise DecryptionError(
            "the decrypted update and the reference adapter hold different tensors "
            f"(not in the reference: {unknown[:3]})"
        )
    updated: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        if name not in mean_delta:
            updated[name] = tensor.detach().clone().contiguous()
            continue
        delta = mean_delta[name]
        if delta.shape != tensor.shape:
            raise DecryptionError(f"tensor {name!r}: update shape {tuple(delta.shape)} differs")
        summed = tensor.detach().to(torch.float64) + delta.to(torch.float64)
        updated[name] = summed.to(tensor.dtype).contiguous()
    return updated


class ServerStateStore(Protocol):
    """Where the custodian keeps its server-optimiser state between rounds (sealed)."""

    def load_state(self, adapter_digest: str) -> bytes | None:
        """The state that continues from the adapter with ``adapter_digest``, if any."""
        ...

    def store_state(self, adapter_digest: str, state: bytes) -> None:
        """Keep the state that continues from the adapter with ``adapter_digest``."""
        ...


@dataclass(frozen=True)
class GlobalStep:
    """The next global adapter and how the server optimiser got there."""

    adapter: dict[str, torch.Tensor]
    state_continued: bool
    """True when a stateful optimiser continued the state kept for the reference."""


def advance_global_adapter(
    reference: Mapping[str, torch.Tensor],
    mean_delta: Mapping[str, torch.Tensor],
    rule: ServerOptimizerRule,
    store: ServerStateStore,
) -> GlobalStep:
    """Apply the round's server optimiser to the decrypted mean update.

    A stateful rule (FedAdam, FedYogi) continues the state kept for exactly this
    reference adapter (by its tensors digest), or starts from zero moments on the first
    round; the new state is kept under the digest of the adapter it produced.
    """
    kept = store.load_state(tensors_digest(reference)) if rule.stateful else None
    state = ServerOptimizerState.from_bytes(kept) if kept is not None else None
    step, new_state = server_step(rule, mean_delta, state)
    updated = apply_update(reference, step)
    if new_state is not None:
        store.store_state(tensors_digest(updated), new_state.to_bytes())
    return GlobalStep(updated, kept is not None)
