"""Encrypted federated aggregation of LoRA adapters (TenSEAL CKKS).

Sites and the aggregator hold only the federation's public CKKS context; the secret
key stays with the key custodian. See ``docs/FEDERATION.md`` for the protocol, the
parameters and their security level, the envelope format and the DP accounting.

Typical flow::

    record = run_key_ceremony(out_dir, secret_store)              # custodian, once
    public = PublicFederation.read(out_dir)                        # everyone
    spec = RoundSpec.from_reference(round_id, base_digest, reference, max_site_weight)
    update = build_site_update(trained=..., reference=..., spec=spec, site_id=...,
                               weight=n_examples, public=public, signer=site_key,
                               config=SiteUpdateConfig(clip_norm=1.0))   # each site
    result = aggregate_updates(envelopes, site_keys, spec, public, min_sites)  # aggregator
    secret = load_secret_from_store(secret_store, public)          # custodian
    custodian = Custodian(secret, site_keys, CustodianLedger(ledger_path, custodian_key))
    mean_delta = custodian.decrypt(result, envelopes).mean_delta   # verified, once a round
    write_peft_adapter(apply_update(reference, mean_delta), reference_dir, out_dir)
"""

from typing import TYPE_CHECKING

from tensorguard.federation._accountant import gaussian_epsilon
from tensorguard.federation._errors import (
    FederationError,
    PrivacyBudgetExceededError,
    QuorumNotMetError,
)
from tensorguard.federation._params import FederationParams, he_standard_violation
from tensorguard.federation._round_progress import (
    MAX_TRAINING_ATTEMPTS,
    RoundStage,
    round_progress,
    training_attempt,
)
from tensorguard.federation._server_optimizer import (
    ServerOptimizerName,
    ServerOptimizerRule,
    ServerOptimizerState,
    server_step,
)
from tensorguard.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from tensorguard.federation._aggregation import (
        AcceptedUpdate,
        AggregationResult,
        Rejection,
        RejectionReason,
        aggregate_updates,
    )
    from tensorguard.federation._context import (
        CeremonyRecord,
        FederationKeys,
        PublicFederation,
        SecretFederation,
        SecretStore,
        create_federation_context,
        load_secret_context,
        load_secret_from_store,
        run_key_ceremony,
    )
    from tensorguard.federation._custodian import (
        Custodian,
        CustodianDecryption,
        advance_global_adapter,
        apply_update,
        envelope_digest,
    )
    from tensorguard.federation._custodian_ledger import (
        LEDGER_SIGNATURE_CONTEXT,
        CustodianLedger,
        LedgerError,
    )
    from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope
    from tensorguard.federation._fixed_point import (
        MAX_ROUND_VALUES,
        ROUND_FAILURE_BOUND,
        WORST_SLOT_SAFETY,
        ckks_noise_std,
        grid_bits_for,
        round_failure_bounds,
        worst_key_refusal_bound,
        worst_slot_scale,
    )
    from tensorguard.federation._layout import TensorLayout, tensors_digest
    from tensorguard.federation._lora_factors import (
        FactorAveragingReport,
        average_factors,
        average_products,
        compare_factor_averaging,
    )
    from tensorguard.federation._masking import mask_encrypted_vector, mask_level
    from tensorguard.federation._packing import (
        Packing,
        chunk_lengths,
        decrypt_vector,
        encrypt_vector,
    )
    from tensorguard.federation._pair_exchange import (
        InMemoryPairSecretStore,
        PairwiseMailbox,
        site_pairwise_secrets,
    )
    from tensorguard.federation._pairwise import (
        PairwiseSecrets,
        acknowledge_accepted_set,
        close_round_in_process,
        reveal_seeds,
    )
    from tensorguard.federation._peft_adapter import write_peft_adapter
    from tensorguard.federation._privacy import DPConfig, DPRule, PrivacyLedger, PrivacyReport
    from tensorguard.federation._round_spec import (
        RoundSpec,
        load_signed_round_spec,
        sign_round_spec,
    )
    from tensorguard.federation._site_update import SiteUpdate, SiteUpdateConfig, build_site_update

__all__ = [
    "LEDGER_SIGNATURE_CONTEXT",
    "MAX_ROUND_VALUES",
    "MAX_TRAINING_ATTEMPTS",
    "ROUND_FAILURE_BOUND",
    "WORST_SLOT_SAFETY",
    "AcceptedUpdate",
    "AggregationResult",
    "CeremonyRecord",
    "Custodian",
    "CustodianDecryption",
    "CustodianLedger",
    "DPConfig",
    "DPRule",
    "EnvelopeHeader",
    "FactorAveragingReport",
    "FederationError",
    "FederationKeys",
    "FederationParams",
    "InMemoryPairSecretStore",
    "LedgerError",
    "Packing",
    "PairwiseMailbox",
    "PairwiseSecrets",
    "PrivacyBudgetExceededError",
    "PrivacyLedger",
    "PrivacyReport",
    "PublicFederation",
    "QuorumNotMetError",
    "Rejection",
    "RejectionReason",
    "RoundSpec",
    "RoundStage",
    "SealedEnvelope",
    "SecretFederation",
    "SecretStore",
    "ServerOptimizerName",
    "ServerOptimizerRule",
    "ServerOptimizerState",
    "SiteUpdate",
    "SiteUpdateConfig",
    "TensorLayout",
    "acknowledge_accepted_set",
    "advance_global_adapter",
    "aggregate_updates",
    "apply_update",
    "average_factors",
    "average_products",
    "build_site_update",
    "chunk_lengths",
    "ckks_noise_std",
    "close_round_in_process",
    "compare_factor_averaging",
    "create_federation_context",
    "decrypt_vector",
    "encrypt_vector",
    "envelope_digest",
    "gaussian_epsilon",
    "grid_bits_for",
    "he_standard_violation",
    "load_secret_context",
    "load_secret_from_store",
    "load_signed_round_spec",
    "mask_encrypted_vector",
    "mask_level",
    "reveal_seeds",
    "round_failure_bounds",
    "round_progress",
    "run_key_ceremony",
    "server_step",
    "sign_round_spec",
    "site_pairwise_secrets",
    "tensors_digest",
    "training_attempt",
    "worst_key_refusal_bound",
    "worst_slot_scale",
    "write_peft_adapter",
]

# The rest needs torch, NumPy or TenSEAL: imported on first use, so that importing the
# package for its errors or parameters (every Dagster process loading the definitions)
# does not load them.
_LAZY = {
    "AcceptedUpdate": "._aggregation",
    "AggregationResult": "._aggregation",
    "Rejection": "._aggregation",
    "RejectionReason": "._aggregation",
    "aggregate_updates": "._aggregation",
    "CeremonyRecord": "._context",
    "FederationKeys": "._context",
    "PublicFederation": "._context",
    "SecretFederation": "._context",
    "SecretStore": "._context",
    "create_federation_context": "._context",
    "load_secret_context": "._context",
    "load_secret_from_store": "._context",
    "run_key_ceremony": "._context",
    "Custodian": "._custodian",
    "CustodianDecryption": "._custodian",
    "advance_global_adapter": "._custodian",
    "apply_update": "._custodian",
    "envelope_digest": "._custodian",
    "LEDGER_SIGNATURE_CONTEXT": "._custodian_ledger",
    "CustodianLedger": "._custodian_ledger",
    "LedgerError": "._custodian_ledger",
    "EnvelopeHeader": "._envelope",
    "SealedEnvelope": "._envelope",
    "MAX_ROUND_VALUES": "._fixed_point",
    "ROUND_FAILURE_BOUND": "._fixed_point",
    "WORST_SLOT_SAFETY": "._fixed_point",
    "ckks_noise_std": "._fixed_point",
    "grid_bits_for": "._fixed_point",
    "round_failure_bounds": "._fixed_point",
    "worst_key_refusal_bound": "._fixed_point",
    "worst_slot_scale": "._fixed_point",
    "TensorLayout": "._layout",
    "tensors_digest": "._layout",
    "FactorAveragingReport": "._lora_factors",
    "average_factors": "._lora_factors",
    "average_products": "._lora_factors",
    "compare_factor_averaging": "._lora_factors",
    "mask_encrypted_vector": "._masking",
    "mask_level": "._masking",
    "Packing": "._packing",
    "chunk_lengths": "._packing",
    "decrypt_vector": "._packing",
    "encrypt_vector": "._packing",
    "InMemoryPairSecretStore": "._pair_exchange",
    "PairwiseMailbox": "._pair_exchange",
    "site_pairwise_secrets": "._pair_exchange",
    "PairwiseSecrets": "._pairwise",
    "acknowledge_accepted_set": "._pairwise",
    "close_round_in_process": "._pairwise",
    "reveal_seeds": "._pairwise",
    "write_peft_adapter": "._peft_adapter",
    "DPConfig": "._privacy",
    "DPRule": "._privacy",
    "PrivacyLedger": "._privacy",
    "PrivacyReport": "._privacy",
    "RoundSpec": "._round_spec",
    "load_signed_round_spec": "._round_spec",
    "sign_round_spec": "._round_spec",
    "SiteUpdate": "._site_update",
    "SiteUpdateConfig": "._site_update",
    "build_site_update": "._site_update",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
