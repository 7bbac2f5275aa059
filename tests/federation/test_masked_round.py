"""A masked round end to end with the project's API: sites agree pair secrets through
the coordinator's mailbox in any order, mask their ciphertexts, and the custodian can
decrypt only the sum; a single site's ciphertext decrypts to noise; dropouts are
recovered from the survivors' signed seed reveals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tensorguard.crypto._xwing import XWingPrivateKey
from tensorguard.federation._aggregation import aggregate_updates
from tensorguard.federation._envelope import SealedEnvelope
from tensorguard.federation._errors import DecryptionError, FederationError
from tensorguard.federation._layout import TensorLayout
from tensorguard.federation._packing import decrypt_vector, load_encrypted_vector
from tensorguard.federation._pair_exchange import (
    InMemoryPairSecretStore,
    PairwiseMailbox,
    site_pairwise_secrets,
)
from tensorguard.federation._pairwise import (
    PairwiseError,
    PairwiseSecrets,
    RevealRefusedError,
    close_round_in_process,
)
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdateConfig, build_site_update, clip_l2
from tests.federation.conftest import (
    MAX_SITE_WEIGHT,
    Federation,
    lora_reference,
    site_index,
    site_weight,
    trained_like,
)

SITES = ("site-00", "site-01", "site-02", "site-03", "site-04")
EPOCH = "epoch-1"
KEM_KEYS = {site: XWingPrivateKey.generate() for site in SITES}
REFERENCE = lora_reference(modules=24, rank=16)
"""Large enough (~120k values) that a correlation of 0.01 is statistically meaningful."""


def _trained(site: str) -> dict:
    return trained_like(REFERENCE, site_index(site))


def _spec(round_id: str) -> RoundSpec:
    return RoundSpec.from_reference(
        round_id,
        "b" * 64,
        REFERENCE,
        MAX_SITE_WEIGHT,
        site_weight_caps={site: site_weight(site) for site in SITES},
        mask_epoch=EPOCH,
    )


def _secrets(
    fed: Federation,
    mailbox: PairwiseMailbox,
    stores: dict[str, InMemoryPairSecretStore],
    order: Sequence[str],
) -> dict[str, PairwiseSecrets]:
    return {
        site: site_pairwise_secrets(
            epoch_id=EPOCH,
            site_id=site,
            roster=SITES,
            mailbox=mailbox,
            store=stores[site],
            signer=fed.site_keys[site],
            kem_private=KEM_KEYS[site],
            roster_kem_keys={peer: key.public_key() for peer, key in KEM_KEYS.items()},
            signing_keys=fed.registered,
        )
        for site in order
    }


@pytest.fixture(scope="module")
def pair_secrets(
    fed: Federation, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, PairwiseSecrets]:
    mailbox = PairwiseMailbox(tmp_path_factory.mktemp("mailbox"))
    stores = {site: InMemoryPairSecretStore() for site in SITES}
    # Sites come in an arbitrary order: later sites open offers, earlier ones make them.
    first = _secrets(fed, mailbox, stores, ["site-03", "site-00", "site-04", "site-01", "site-02"])
    again = _secrets(fed, mailbox, stores, list(SITES))  # from each site's own store
    for site in SITES:
        assert first[site].secrets == again[site].secrets
        assert first[site].self_secret == again[site].self_secret
        for peer in first[site].peers:
            assert first[site].secrets[peer] == first[peer].secrets[site]
    return first


def _masked_update(
    fed: Federation, spec: RoundSpec, site: str, secrets: PairwiseSecrets | None
) -> bytes:
    return build_site_update(
        trained=_trained(site),
        reference=REFERENCE,
        spec=spec,
        site_id=site,
        weight=site_weight(site),
        public=fed.public,
        signer=fed.site_keys[site],
        config=SiteUpdateConfig(clip_norm=1e6),
        pairwise=secrets,
    ).envelope


def _delta(site: str) -> np.ndarray:
    layout = TensorLayout.from_tensors(REFERENCE)
    return clip_l2(layout.flatten(_trained(site)) - layout.flatten(REFERENCE), 1e6)


def _relative_error(mean_delta: dict, sites: Sequence[str]) -> float:
    flat = TensorLayout.from_tensors(REFERENCE).flatten(mean_delta)
    total = sum(site_weight(s) * _delta(s) for s in sites)
    expected = np.asarray(total) / sum(site_weight(s) for s in sites)
    return float(np.linalg.norm(flat - expected) / np.linalg.norm(expected))


def _close(
    fed: Federation,
    pair_secrets: dict[str, PairwiseSecrets],
    spec: RoundSpec,
    accepted: Sequence[str],
    dropped: Sequence[str] = (),
) -> list[bytes]:
    """The accepted sites' acknowledgements, then their signed seed reveals."""
    return close_round_in_process(
        pair_secrets,
        fed.site_keys,
        round_id=spec.round_id,
        accepted=accepted,
        dropped=dropped,
        signing_keys=fed.registered,
    )


def test_one_masked_site_decrypts_to_noise_and_the_sum_to_fedavg(
    fed: Federation, pair_secrets: dict[str, PairwiseSecrets], tmp_path: Path
) -> None:
    spec = _spec("masked-0001")
    envelopes = [_masked_update(fed, spec, s, pair_secrets[s]) for s in SITES]

    # The custodian's secret key applied to one site's ciphertext alone: noise.
    layout = spec.tensor_layout
    single = load_encrypted_vector(
        SealedEnvelope.from_bytes(envelopes[2]).payload,
        fed.secret.context,
        fed.public.params,
        layout.numel,
    )
    decrypted = decrypt_vector(single, fed.secret.context)
    correlation = float(np.corrcoef(decrypted, _delta("site-02"))[0, 1])
    assert abs(correlation) < 0.01, correlation

    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, 2)
    custodian = fed.custodian(tmp_path / "ledger.jsonl")
    with pytest.raises(DecryptionError, match="stays masked"):  # no self seeds yet
        custodian.decrypt(result, envelopes)
    reveals = _close(fed, pair_secrets, spec, SITES)
    mean = custodian.decrypt(result, envelopes, reveals=reveals).mean_delta
    assert _relative_error(mean, SITES) <= 1e-6


def test_dropouts_are_recovered_from_survivor_reveals_and_refused_without(
    fed: Federation, pair_secrets: dict[str, PairwiseSecrets], tmp_path: Path
) -> None:
    spec = _spec("masked-0002")
    survivors = ("site-00", "site-02", "site-04")
    dropped = ("site-01", "site-03")  # they masked, then never delivered
    envelopes = [_masked_update(fed, spec, s, pair_secrets[s]) for s in survivors]
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, 2)
    assert [u.site_id for u in result.accepted] == list(survivors)

    with pytest.raises(DecryptionError, match="stays masked"):
        fed.custodian(tmp_path / "refused.jsonl").decrypt(result, envelopes)

    reveals = _close(fed, pair_secrets, spec, survivors, dropped)
    with pytest.raises(DecryptionError, match="stays masked"):  # one survivor silent
        fed.custodian(tmp_path / "partial.jsonl").decrypt(result, envelopes, reveals=reveals[:2])
    custodian = fed.custodian(tmp_path / "ledger.jsonl")
    mean = custodian.decrypt(result, envelopes, reveals=reveals).mean_delta
    assert _relative_error(mean, survivors) <= 1e-6


def test_a_survivor_refuses_to_reveal_a_seed_that_would_unmask_an_accepted_site(
    fed: Federation, pair_secrets: dict[str, PairwiseSecrets]
) -> None:
    with pytest.raises(RevealRefusedError, match="accepted"):
        close_round_in_process(
            pair_secrets,
            fed.site_keys,
            round_id="masked-0003",
            accepted=("site-00", "site-01"),
            dropped=("site-01",),
            signing_keys=fed.registered,
        )


def test_a_site_without_pair_secrets_or_with_the_wrong_roster_cannot_report(
    fed: Federation, pair_secrets: dict[str, PairwiseSecrets]
) -> None:
    spec = _spec("masked-0004")
    with pytest.raises(FederationError, match="requires pairwise masking"):
        _masked_update(fed, spec, "site-00", None)
    partial = PairwiseSecrets(
        EPOCH,
        "site-00",
        {p: pair_secrets["site-00"].secrets[p] for p in ("site-01",)},
        pair_secrets["site-00"].self_secret,
    )
    with pytest.raises(FederationError, match="roster needs exactly"):
        _masked_update(fed, spec, "site-00", partial)


def test_the_mailbox_cannot_be_used_to_swap_in_a_forged_offer(
    fed: Federation, tmp_path: Path
) -> None:
    mailbox = PairwiseMailbox(tmp_path)
    stores = {site: InMemoryPairSecretStore() for site in SITES}
    _secrets(fed, mailbox, stores, ["site-00"])  # site-00 posts offers to everyone
    path = mailbox.offer_path(EPOCH, "site-00", "site-01")
    forged = bytearray(path.read_bytes())
    forged[-10] ^= 0x01  # flip a signature bit
    path.write_bytes(bytes(forged))
    with pytest.raises(PairwiseError):
        _secrets(fed, mailbox, stores, ["site-01"])
