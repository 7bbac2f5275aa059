"""Double masking over CKKS: X-Wing pair secrets, pairwise and self masks, cancellation,
acknowledged seed reveals, dropout recovery, and the collusion the self mask stops.

Everything here is real: X-Wing encapsulation between sites, composite signatures,
TenSEAL ciphertexts at the federation's default parameters, and decryption with the
custodian's secret context.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest

from tensorguard.crypto._composite import CompositeSigningKey, CompositeVerifyKey
from tensorguard.crypto._xwing import XWingPrivateKey
from tensorguard.federation._context import PublicFederation, SecretFederation
from tensorguard.federation._layout import FloatVector
from tensorguard.federation._masking import (
    MaskingError,
    MaskLevel,
    RevealedMasks,
    SiteMaskSeeds,
    add_to_c0,
    derive_mask,
    mask_encrypted_vector,
    mask_level,
    neg_mod,
    site_mask,
    uniform_mod,
    unmask_aggregate,
    unmasking_offset,
)
from tensorguard.federation._packing import (
    EncryptedVector,
    decrypt_vector,
    encrypt_vector,
    load_encrypted_vector,
)
from tensorguard.federation._pairwise import (
    OFFER_SIGNATURE_CONTEXT,
    REVEAL_SIGNATURE_CONTEXT,
    PairwiseError,
    PairwiseOffer,
    PairwiseSecrets,
    RevealRefusedError,
    SeedReveal,
    acknowledge_accepted_set,
    collect_revealed_seeds,
    create_pairwise_offers,
    establish_pairwise_secrets,
    open_pairwise_offer,
    reveal_seeds,
    verify_seed_reveal,
)

EPOCH = "epoch-0001"
ROUND = "round-0007"
SITES = ("site-00", "site-01", "site-02", "site-03", "site-04")
WEIGHTS = {"site-00": 4800.0, "site-01": 130.0, "site-02": 2200.0, "site-03": 960.0, "site-04": 1.0}
MAX_WEIGHT = 5000.0
CHUNKS = 64
"""Ciphertexts per update: 64 x 4096 = 262,144 values (Pearson r's std is then 0.002)."""


@dataclasses.dataclass(frozen=True)
class Enrolled:
    """Five enrolled sites: signing keys, X-Wing keys, their epoch secrets and the relay."""

    signers: dict[str, CompositeSigningKey]
    verify_keys: dict[str, CompositeVerifyKey]
    kem_keys: dict[str, XWingPrivateKey]
    secrets: dict[str, PairwiseSecrets]
    relayed: dict[str, list[bytes]]


@pytest.fixture(scope="module")
def enrolled(site_keys: dict[str, CompositeSigningKey]) -> Enrolled:
    signers = {site: site_keys[site] for site in SITES}
    verify_keys = {site: key.public_key() for site, key in signers.items()}
    kem_keys = {site: XWingPrivateKey.generate() for site in SITES}
    kem_public = {site: key.public_key() for site, key in kem_keys.items()}
    outgoing = {
        site: create_pairwise_offers(EPOCH, site, signers[site], kem_public) for site in SITES
    }
    relayed: dict[str, list[bytes]] = {site: [] for site in SITES}
    for out in outgoing.values():
        for offer in out.offers:
            relayed[offer.recipient].append(offer.to_bytes())
    secrets = {
        site: establish_pairwise_secrets(
            epoch_id=EPOCH,
            site_id=site,
            roster=SITES,
            outgoing=outgoing[site],
            incoming=relayed[site],
            kem_private=kem_keys[site],
            signing_keys=verify_keys,
            self_secret=os.urandom(32),
        )
        for site in SITES
    }
    return Enrolled(signers, verify_keys, kem_keys, secrets, relayed)


@pytest.fixture(scope="module")
def level(public: PublicFederation) -> MaskLevel:
    return mask_level(public.load_context(), public.params)


@dataclasses.dataclass(frozen=True)
class RoundUpdates:
    deltas: dict[str, FloatVector]
    plain: dict[str, EncryptedVector]
    masked: dict[str, EncryptedVector]


@pytest.fixture(scope="module")
def round_updates(public: PublicFederation, enrolled: Enrolled, level: MaskLevel) -> RoundUpdates:
    """Every site's weighted delta, encrypted, then masked with its round seeds."""
    context = public.load_context()
    rng = np.random.default_rng(20240601)
    length = CHUNKS * public.params.slot_count - 123  # a partial last chunk too
    deltas: dict[str, FloatVector] = {}
    plain: dict[str, EncryptedVector] = {}
    masked: dict[str, EncryptedVector] = {}
    for site in SITES:
        delta = rng.normal(0.0, 0.01, size=length) + 0.003 * np.sin(np.arange(length) / 50.0)
        deltas[site] = delta
        plain[site] = encrypt_vector(delta * (WEIGHTS[site] / MAX_WEIGHT), context, public.params)
        masked[site] = mask_encrypted_vector(
            plain[site], site, enrolled.secrets[site].mask_seeds(ROUND), level
        )
    return RoundUpdates(deltas, plain, masked)


def _sum(vectors: list[EncryptedVector]) -> EncryptedVector:
    total = vectors[0]
    for vector in vectors[1:]:
        total = total + vector
    return total


def _custodian_mean(
    summed: EncryptedVector, sites: tuple[str, ...], secret: SecretFederation
) -> FloatVector:
    """Decrypt and divide by the encoded total weight, as ``decrypt_aggregate`` does."""
    encoded_weight = sum(WEIGHTS[site] for site in sites) / MAX_WEIGHT
    mean: FloatVector = decrypt_vector(summed, secret.context) / encoded_weight
    return mean


def _fedavg(deltas: dict[str, FloatVector], sites: tuple[str, ...]) -> FloatVector:
    total = sum(WEIGHTS[site] for site in sites)
    weighted = np.zeros_like(deltas[sites[0]])
    for site in sites:
        weighted += deltas[site] * WEIGHTS[site]
    mean: FloatVector = weighted / total
    return mean


def _relative_error(got: FloatVector, expected: FloatVector) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def _serialized(vector: EncryptedVector) -> list[bytes]:
    return [chunk.serialize() for chunk in vector.chunks]


# --- pairwise secrets ----------------------------------------------------------------
def test_both_sites_of_a_pair_derive_the_same_secret_and_round_seeds(enrolled: Enrolled) -> None:
    for site in SITES:
        assert enrolled.secrets[site].peers == tuple(p for p in SITES if p != site)
    pair_secrets = set()
    for a in SITES:
        for b in SITES:
            if a >= b:
                continue
            mine, theirs = enrolled.secrets[a], enrolled.secrets[b]
            assert mine.secrets[b] == theirs.secrets[a]
            assert mine.round_seed(b, ROUND) == theirs.round_seed(a, ROUND)
            assert mine.round_seed(b, ROUND) != mine.round_seed(b, "round-0008")
            pair_secrets.add(mine.secrets[b])
    assert len(pair_secrets) == 10  # one distinct secret per pair
    assert enrolled.secrets["site-00"].secrets["site-01"].hex() not in repr(
        enrolled.secrets["site-00"]
    )


def test_an_epoch_without_every_peers_offer_is_refused(enrolled: Enrolled) -> None:
    kem_public = {site: key.public_key() for site, key in enrolled.kem_keys.items()}
    outgoing = create_pairwise_offers(EPOCH, "site-03", enrolled.signers["site-03"], kem_public)
    with pytest.raises(PairwiseError, match="no pairwise offer from"):
        establish_pairwise_secrets(
            epoch_id=EPOCH,
            site_id="site-03",
            roster=SITES,
            outgoing=outgoing,
            incoming=enrolled.relayed["site-03"][:-1],
            kem_private=enrolled.kem_keys["site-03"],
            signing_keys=enrolled.verify_keys,
            self_secret=os.urandom(32),
        )


# --- (e) tampered or unsigned messages -----------------------------------------------
def _an_offer(enrolled: Enrolled) -> PairwiseOffer:
    return PairwiseOffer.from_bytes(enrolled.relayed["site-04"][0])


def _open(enrolled: Enrolled, data: bytes, site: str = "site-04", epoch: str = EPOCH) -> None:
    open_pairwise_offer(
        data,
        epoch_id=epoch,
        site_id=site,
        kem_private=enrolled.kem_keys[site],
        signing_keys=enrolled.verify_keys,
    )


def test_a_relayed_offer_opens(enrolled: Enrolled) -> None:
    offer = _an_offer(enrolled)
    sender, secret = open_pairwise_offer(
        offer.to_bytes(),
        epoch_id=EPOCH,
        site_id="site-04",
        kem_private=enrolled.kem_keys["site-04"],
        signing_keys=enrolled.verify_keys,
    )
    assert secret == enrolled.secrets["site-04"].secrets[sender]


def test_tampered_unsigned_forged_or_misdirected_offers_are_refused(enrolled: Enrolled) -> None:
    offer = _an_offer(enrolled)
    flipped = bytes([offer.kem_ciphertext[0] ^ 1]) + offer.kem_ciphertext[1:]
    with pytest.raises(PairwiseError, match="signature does not verify"):
        _open(enrolled, dataclasses.replace(offer, kem_ciphertext=flipped).to_bytes())
    with pytest.raises(PairwiseError, match="unsigned"):
        _open(enrolled, dataclasses.replace(offer, signature=b"").to_bytes())
    impostor = enrolled.signers["site-03"]  # a registered site, but not the sender
    assert offer.sender != "site-03"
    forged = dataclasses.replace(
        offer, signature=impostor.sign(offer.body(), OFFER_SIGNATURE_CONTEXT)
    )
    with pytest.raises(PairwiseError, match="signature"):
        _open(enrolled, forged.to_bytes())
    with pytest.raises(PairwiseError, match="addressed to"):
        _open(enrolled, offer.to_bytes(), site="site-03")
    with pytest.raises(PairwiseError, match="epoch"):
        _open(enrolled, offer.to_bytes(), epoch="epoch-0002")
    raw = bytearray(offer.to_bytes())
    raw[-100] ^= 0x40  # inside the signature
    with pytest.raises(PairwiseError):
        _open(enrolled, bytes(raw))
    raw = bytearray(offer.to_bytes())
    raw[20] ^= 0x01  # inside the canonical JSON body
    with pytest.raises(PairwiseError):
        _open(enrolled, bytes(raw))
    with pytest.raises(PairwiseError):
        _open(enrolled, offer.to_bytes() + b"\x00")


ACCEPTED = ("site-00", "site-02", "site-04")
DROPPED = ("site-01", "site-03")


def _acks(enrolled: Enrolled, accepted: tuple[str, ...] = ACCEPTED) -> list[bytes]:
    """Each accepted site's acknowledgement of ``accepted`` (fresh records)."""
    return [
        acknowledge_accepted_set(
            enrolled.secrets[site],
            round_id=ROUND,
            accepted=accepted,
            signer=enrolled.signers[site],
            answered={},
        ).to_bytes()
        for site in accepted
    ]


def _reveal(
    enrolled: Enrolled,
    survivor: str = "site-00",
    accepted: tuple[str, ...] = ACCEPTED,
    dropped: tuple[str, ...] = DROPPED,
    answered: dict[str, frozenset[str]] | None = None,
    acks: list[bytes] | None = None,
) -> SeedReveal:
    """``survivor``'s reveal after it and (unless ``acks`` says otherwise) every accepted
    site acknowledged ``accepted``."""
    record = {ROUND: frozenset(accepted)} if answered is None else answered
    return reveal_seeds(
        enrolled.secrets[survivor],
        round_id=ROUND,
        accepted=accepted,
        dropped=dropped,
        signer=enrolled.signers[survivor],
        answered=record,
        acks=_acks(enrolled, accepted) if acks is None else acks,
        signing_keys=enrolled.verify_keys,
    )


def _verify_reveal(enrolled: Enrolled, data: bytes) -> SeedReveal:
    return verify_seed_reveal(
        data,
        epoch_id=EPOCH,
        round_id=ROUND,
        accepted=ACCEPTED,
        signing_keys=enrolled.verify_keys,
    )


def test_tampered_unsigned_or_forged_reveals_are_refused(enrolled: Enrolled) -> None:
    reveal = _reveal(enrolled)
    assert _verify_reveal(enrolled, reveal.to_bytes()).seeds == reveal.seeds
    assert reveal.seeds["site-01"].hex() not in repr(reveal)
    other_seed = dict(reveal.seeds, **{"site-01": os.urandom(32)})
    with pytest.raises(PairwiseError, match="signature does not verify"):
        _verify_reveal(enrolled, dataclasses.replace(reveal, seeds=other_seed).to_bytes())
    with pytest.raises(PairwiseError, match="unsigned"):
        _verify_reveal(enrolled, dataclasses.replace(reveal, signature=b"").to_bytes())
    wider = dataclasses.replace(reveal, accepted=("site-00", "site-01", "site-02", "site-04"))
    with pytest.raises(PairwiseError, match="signature does not verify"):
        _verify_reveal(enrolled, wider.to_bytes())
    with pytest.raises(PairwiseError, match="different set of accepted"):
        verify_seed_reveal(
            reveal.to_bytes(),
            epoch_id=EPOCH,
            round_id=ROUND,
            accepted=("site-00", "site-02"),
            signing_keys=enrolled.verify_keys,
        )
    # A reveal its own signer built by hand with a seed of an accepted site: refused.
    leaking = dataclasses.replace(
        reveal, seeds={"site-02": enrolled.secrets["site-00"].round_seed("site-02", ROUND)}
    )
    leaking = dataclasses.replace(
        leaking,
        signature=enrolled.signers["site-00"].sign(leaking.body(), REVEAL_SIGNATURE_CONTEXT),
    )
    with pytest.raises(PairwiseError, match="seeds of accepted sites"):
        _verify_reveal(enrolled, leaking.to_bytes())


# --- (d) refusals --------------------------------------------------------------------
def test_a_survivor_refuses_to_reveal_the_seed_shared_with_an_accepted_site(
    enrolled: Enrolled,
) -> None:
    with pytest.raises(RevealRefusedError, match="accepted"):
        _reveal(enrolled, dropped=("site-01", "site-02"))
    with pytest.raises(RevealRefusedError, match="not among the accepted"):
        _reveal(enrolled, survivor="site-01", dropped=("site-03",))
    first = _reveal(enrolled)
    assert set(first.seeds) == {"site-01", "site-03"}
    assert first.self_seed == enrolled.secrets["site-00"].self_seed(ROUND)


def test_a_site_acknowledges_one_accepted_set_per_round_and_reveals_only_for_it(
    enrolled: Enrolled,
) -> None:
    answered: dict[str, frozenset[str]] = {}
    ack = acknowledge_accepted_set(
        enrolled.secrets["site-00"],
        round_id=ROUND,
        accepted=ACCEPTED,
        signer=enrolled.signers["site-00"],
        answered=answered,
    )
    assert ack.accepted == ACCEPTED
    assert _reveal(enrolled, answered=answered).revealer == "site-00"
    wider = ("site-00", "site-01", "site-02", "site-04")
    with pytest.raises(RevealRefusedError, match="already acknowledged another"):
        acknowledge_accepted_set(
            enrolled.secrets["site-00"],
            round_id=ROUND,
            accepted=wider,
            signer=enrolled.signers["site-00"],
            answered=answered,
        )
    # A site that never acknowledged the set reveals nothing for it.
    with pytest.raises(RevealRefusedError, match="has not acknowledged"):
        _reveal(enrolled, accepted=wider, dropped=("site-03",), answered=answered)
    with pytest.raises(RevealRefusedError, match="has not acknowledged"):
        _reveal(enrolled, answered={})


def test_a_site_reveals_only_with_every_accepted_sites_acknowledgement(
    enrolled: Enrolled,
) -> None:
    acks = _acks(enrolled)
    with pytest.raises(RevealRefusedError, match=r"no acknowledgement .* from \['site-04'\]"):
        _reveal(enrolled, acks=acks[:2])
    # site-04 acknowledged another set (it was told site-02 dropped): no reveal at all.
    other_set = ("site-00", "site-01", "site-03", "site-04")
    [stray] = [ack for ack in _acks(enrolled, other_set) if b'"site":"site-04"' in ack]
    with pytest.raises(RevealRefusedError, match="acknowledged a different accepted set"):
        _reveal(enrolled, acks=[*acks[:2], stray])
    tampered = bytearray(acks[2])
    tampered[-50] ^= 0x01
    with pytest.raises(RevealRefusedError, match="signature"):
        _reveal(enrolled, acks=[*acks[:2], bytes(tampered)])


def test_an_honest_site_declared_dropped_stays_masked_by_its_self_mask(
    round_updates: RoundUpdates, enrolled: Enrolled, level: MaskLevel, secret: SecretFederation
) -> None:
    """Aggregator and custodian colluding: they hold site-02's ciphertext, call it dropped
    and collect every other site's pairwise seed with it. Its self mask still hides it."""
    victim = "site-02"
    others = tuple(site for site in SITES if site != victim)
    reveals = [
        _reveal(enrolled, survivor=site, accepted=others, dropped=(victim,)) for site in others
    ]
    pair_seeds = {(r.revealer, victim): r.seeds[victim] for r in reveals}
    # Strip every pairwise mask from the victim's ciphertext (signs seen from the victim).
    truth = round_updates.deltas[victim]
    offsets = RevealedMasks({(victim, peer): seed for (peer, _), seed in pair_seeds.items()}, {})
    without_pairs = _remove(round_updates.masked[victim], offsets, level)
    correlation = float(np.corrcoef(decrypt_vector(without_pairs, secret.context), truth)[0, 1])
    print(f"victim after stripping all pairwise masks: Pearson r = {correlation:+.5f}")
    assert abs(correlation) < 0.01
    # The self mask is what hides it: with the victim's self seed too, it is readable.
    own = RevealedMasks({}, {victim: enrolled.secrets[victim].self_seed(ROUND)})
    exposed = decrypt_vector(_remove(without_pairs, own, level), secret.context)
    assert float(np.corrcoef(exposed, truth)[0, 1]) > 0.999


def _remove(vector: EncryptedVector, masks: RevealedMasks, level: MaskLevel) -> EncryptedVector:
    """Subtract the given masks from one ciphertext (what colluders holding seeds do)."""
    moduli = np.array(level.primes, dtype=np.uint64).reshape(-1, 1)
    chunks = tuple(
        add_to_c0(chunk, neg_mod(unmasking_offset(masks, index, level), moduli), level)
        for index, chunk in enumerate(vector.chunks)
    )
    return EncryptedVector(chunks, vector.length, vector.packing)


# --- (f) masks are uniform modulo q --------------------------------------------------
def _chi_square(values: np.ndarray, modulus: int, buckets: int = 64) -> float:
    index = np.minimum(
        (values.astype(np.float64) / modulus * buckets).astype(np.int64), buckets - 1
    )
    counts = np.bincount(index, minlength=buckets)
    expected = values.size / buckets
    return float(np.sum((counts - expected) ** 2 / expected))


CHI_SQUARE_LIMIT = 140.0
"""64 buckets, 63 degrees of freedom: mean 63, std 11.2; 140 is about p = 1e-8."""


def test_derived_masks_are_uniform_below_each_prime(level: MaskLevel) -> None:
    (prime,) = level.primes
    seed = hashlib.sha256(b"uniformity").digest()
    values = np.concatenate([derive_mask(seed, chunk, level)[0] for chunk in range(8)])
    assert values.dtype == np.uint64
    assert values.size == 8 * level.degree
    assert int(values.max()) < prime
    assert _chi_square(values, prime) < CHI_SQUARE_LIMIT
    low_bits = (values & np.uint64(63)).astype(np.int64)
    counts = np.bincount(low_bits, minlength=64)
    assert float(np.sum((counts - values.size / 64) ** 2 / (values.size / 64))) < CHI_SQUARE_LIMIT
    assert np.array_equal(derive_mask(seed, 3, level), derive_mask(seed, 3, level))
    assert not np.array_equal(derive_mask(seed, 3, level), derive_mask(seed, 4, level))


def test_rejection_sampling_is_uniform_for_a_modulus_far_below_a_power_of_two() -> None:
    # q = 1.5 * 2^59: reducing 60-bit words mod q would make [0, 2^58) twice as likely.
    modulus = 3 * 2**58 + 1
    values = uniform_mod(hashlib.sha256(b"far").digest(), modulus, 65536)
    assert int(values.max()) < modulus
    assert _chi_square(values, modulus) < CHI_SQUARE_LIMIT


# --- (a) one masked ciphertext decrypts to noise -------------------------------------
def test_one_sites_masked_update_decrypted_alone_is_uncorrelated_with_its_values(
    round_updates: RoundUpdates, secret: SecretFederation
) -> None:
    site = "site-02"
    truth = round_updates.deltas[site]
    assert truth.size >= 4096
    plain = decrypt_vector(round_updates.plain[site], secret.context)
    assert np.corrcoef(plain, truth)[0, 1] > 0.999  # the unmasked update does reveal it
    masked = decrypt_vector(round_updates.masked[site], secret.context)
    correlation = float(np.corrcoef(masked, truth)[0, 1])
    print(f"masked single-site Pearson r = {correlation:+.5f} over {truth.size} values")
    assert abs(correlation) < 0.01
    assert float(np.std(masked)) > 1e3 * float(np.std(truth))


def test_masked_updates_keep_the_tgcv_wire_format(
    round_updates: RoundUpdates, public: PublicFederation
) -> None:
    masked = round_updates.masked["site-00"]
    loaded = load_encrypted_vector(
        masked.to_bytes(), public.load_context(), public.params, masked.length
    )
    assert _serialized(loaded) == _serialized(masked)


# --- (b) masks cancel in the sum ------------------------------------------------------
@pytest.mark.parametrize("sites", [SITES[:3], SITES], ids=["3-sites", "5-sites"])
def test_the_masked_sum_is_the_exact_sum(
    sites: tuple[str, ...],
    round_updates: RoundUpdates,
    enrolled: Enrolled,
    level: MaskLevel,
    public: PublicFederation,
    secret: SecretFederation,
) -> None:
    context = public.load_context()
    if sites == SITES:
        masked = [round_updates.masked[site] for site in sites]
    else:  # a federation of three: each site masks with the two others only
        masked = []
        for site in sites:
            seeds = SiteMaskSeeds(
                {p: enrolled.secrets[site].round_seed(p, ROUND) for p in sites if p != site},
                enrolled.secrets[site].self_seed(ROUND),
            )
            masked.append(mask_encrypted_vector(round_updates.plain[site], site, seeds, level))
    summed = _sum(masked)
    plain_sum = _sum([round_updates.plain[site] for site in sites])
    # Pairwise masks cancel; the self masks stay until the sites reveal their self seeds.
    assert _serialized(summed) != _serialized(plain_sum)
    still_masked = _custodian_mean(summed, sites, secret)
    assert _relative_error(still_masked, _fedavg(round_updates.deltas, sites)) > 1.0
    self_seeds = {site: enrolled.secrets[site].self_seed(ROUND) for site in sites}
    unmasked = unmask_aggregate(summed, RevealedMasks({}, self_seeds), level)
    assert _serialized(unmasked) == _serialized(plain_sum)  # bit-for-bit: exact mod q
    reloaded = load_encrypted_vector(unmasked.to_bytes(), context, public.params, summed.length)
    mean = _custodian_mean(reloaded, sites, secret)
    error = _relative_error(mean, _fedavg(round_updates.deltas, sites))
    print(f"{len(sites)}-site masked FedAvg relative error = {error:.3e}")
    assert error < 1e-6


# --- (c) dropouts ---------------------------------------------------------------------
def test_two_dropouts_are_recovered_from_the_survivors_revealed_seeds(
    round_updates: RoundUpdates,
    enrolled: Enrolled,
    level: MaskLevel,
    secret: SecretFederation,
) -> None:
    survivors, dropped = ACCEPTED, DROPPED  # the dropped masked, but never delivered
    summed = _sum([round_updates.masked[site] for site in survivors])
    expected = _fedavg(round_updates.deltas, survivors)
    assert _relative_error(_custodian_mean(summed, survivors, secret), expected) > 1.0

    reveals = [_reveal(enrolled, survivor=site).to_bytes() for site in survivors]
    with pytest.raises(PairwiseError, match="has not revealed"):
        collect_revealed_seeds(
            reveals[:2],
            epoch_id=EPOCH,
            round_id=ROUND,
            roster=SITES,
            accepted=survivors,
            signing_keys=enrolled.verify_keys,
        )
    revealed = collect_revealed_seeds(
        reveals,
        epoch_id=EPOCH,
        round_id=ROUND,
        roster=SITES,
        accepted=survivors,
        signing_keys=enrolled.verify_keys,
    )
    assert set(revealed.pair_seeds) == {(s, d) for s in survivors for d in dropped}
    assert set(revealed.self_seeds) == set(survivors)
    recovered = unmask_aggregate(summed, revealed, level)
    plain_sum = _sum([round_updates.plain[site] for site in survivors])
    assert _serialized(recovered) == _serialized(plain_sum)
    error = _relative_error(_custodian_mean(recovered, survivors, secret), expected)
    print(f"3-of-5 survivors after dropout recovery: relative error = {error:.3e}")
    assert error < 1e-6


# --- low-level checks -----------------------------------------------------------------
def test_the_level_and_offsets_are_checked(
    round_updates: RoundUpdates, level: MaskLevel, enrolled: Enrolled
) -> None:
    chunk = round_updates.plain["site-00"].chunks[0]
    seeds = enrolled.secrets["site-00"].mask_seeds(ROUND)
    offset = site_mask("site-00", seeds, 0, level)
    assert offset.shape == level.shape
    unreduced = offset.copy()
    unreduced[0, 0] = np.uint64(level.primes[0])
    with pytest.raises(MaskingError, match="reduced"):
        add_to_c0(chunk, unreduced, level)
    with pytest.raises(MaskingError, match="shape"):
        add_to_c0(chunk, offset[:, :-1], level)
