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

from tensorguard.federation.accountant import gaussian_epsilon
from tensorguard.federation.aggregation import (
    AcceptedUpdate,
    AggregationResult,
    Rejection,
    RejectionReason,
    aggregate_updates,
)
from tensorguard.federation.context import (
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
from tensorguard.federation.custodian import Custodian, CustodianDecryption, apply_update
from tensorguard.federation.custodian_ledger import CustodianLedger
from tensorguard.federation.envelope import EnvelopeHeader, SealedEnvelope
from tensorguard.federation.errors import (
    FederationError,
    PrivacyBudgetExceededError,
    QuorumNotMetError,
)
from tensorguard.federation.layout import TensorLayout, tensors_digest
from tensorguard.federation.lora_factors import (
    FactorAveragingReport,
    average_factors,
    average_products,
    compare_factor_averaging,
)
from tensorguard.federation.params import FederationParams
from tensorguard.federation.peft_adapter import write_peft_adapter
from tensorguard.federation.privacy import DPConfig, PrivacyLedger, PrivacyReport
from tensorguard.federation.round_spec import RoundSpec
from tensorguard.federation.site_update import SiteUpdate, SiteUpdateConfig, build_site_update

__all__ = [
    "AcceptedUpdate",
    "AggregationResult",
    "CeremonyRecord",
    "Custodian",
    "CustodianDecryption",
    "CustodianLedger",
    "DPConfig",
    "EnvelopeHeader",
    "FactorAveragingReport",
    "FederationError",
    "FederationKeys",
    "FederationParams",
    "PrivacyBudgetExceededError",
    "PrivacyLedger",
    "PrivacyReport",
    "PublicFederation",
    "QuorumNotMetError",
    "Rejection",
    "RejectionReason",
    "RoundSpec",
    "SealedEnvelope",
    "SecretFederation",
    "SecretStore",
    "SiteUpdate",
    "SiteUpdateConfig",
    "TensorLayout",
    "aggregate_updates",
    "apply_update",
    "average_factors",
    "average_products",
    "build_site_update",
    "compare_factor_averaging",
    "create_federation_context",
    "gaussian_epsilon",
    "load_secret_context",
    "load_secret_from_store",
    "run_key_ceremony",
    "tensors_digest",
    "write_peft_adapter",
]
