"""Pairwise site secrets for secure aggregation: X-Wing offers, round seeds, seed reveals.

Establishment (once per key epoch)
    For every unordered pair of enrolled sites ``a < b`` (site ids compared as
    strings), ``a`` encapsulates to ``b``'s X-Wing public key and sends a
    :class:`PairwiseOffer` ``(epoch, a, b, fingerprints, X-Wing ciphertext)``
    composite-signed by ``a``. The coordinator relays offers but cannot read them (it
    holds no X-Wing private key). ``b`` verifies the signature under ``a``'s registered
    key, checks the offer is for this epoch, for ``b`` and for ``b``'s current X-Wing
    key, and decapsulates. Both derive the pair secret
    ``HKDF-SHA256(ss, salt=PAIR_SALT, info=encode_info("pair-secret", epoch, a, b,
    SHA-256(ciphertext), recipient KEM key fingerprint, sender signing key fingerprint))``,
    which binds the whole transcript. Each site then holds a :class:`PairwiseSecrets`
    (peer -> 32-byte secret) for the epoch.

Per round
    ``round_seed = HKDF-SHA256(pair_secret, salt=ROUND_SALT, info=encode_info(
    "round-seed", epoch, round_id, a, b))``; :mod:`tensorguard.federation._masking`
    expands it into ciphertext masks. Round seeds are independent of each other, so
    revealing one round's seed says nothing about another round's masks.

Self masks (double masking, Bonawitz et al. 2017)
    Besides its pairwise masks, every site adds a self mask expanded from
    ``self_seed = HKDF-SHA256(self_secret, salt=SELF_SALT, info=encode_info("self-seed",
    epoch, round_id, site))``, where ``self_secret`` is 32 random bytes the site alone
    holds for the epoch. Nothing cancels a self mask: the custodian removes it with the
    seed the site reveals once its update is accepted. A site whose update is summed
    therefore reveals its self seed, and a site that dropped out never does, so whoever
    calls an honest site "dropped" to get its pairwise seeds still faces its self mask.

Closing the round: acknowledgements, then reveals
    When the aggregator has accepted the updates of sites ``A`` and the others ``D``
    dropped, each site in ``A`` first signs an :class:`AcceptedSetAck` of ``A``, and
    signs at most one per round (kept in its ``answered`` record). It then answers the
    reveal request with a :class:`SeedReveal` of its own self seed and its pairwise
    seeds with ``D``, composite-signed together with ``A``, but only if it holds a valid
    acknowledgement of the same ``A`` from *every* site in ``A``. A site refuses
    (:class:`RevealRefusedError`) to reveal a pairwise seed shared with a site in ``A``
    (that would strip an accepted update's pairwise masks) and to reveal anything when it
    is not in ``A`` itself.

    Why the acknowledgements: to read an honest site ``h``'s update, colluders need
    ``h``'s self seed (``h`` reveals it only for a set ``S`` containing ``h``
    acknowledged by all of ``S``) and the pairwise seed of ``h`` with every other honest
    site ``g`` (``g`` reveals it only for a set ``S'`` without ``h``, acknowledged by
    ``g``). An honest ``g`` acknowledges one set per round, so ``g`` cannot be in both:
    ``S`` must hold no honest site but ``h``, and then the sum of ``S`` itself reveals
    ``h`` to whoever knows the other members' updates, which no secure aggregation can
    prevent. :func:`collect_revealed_seeds` verifies the reveals, requires every one to
    name the same ``A``, a reveal from every site in ``A``, and a seed for every
    ``(survivor, dropped)`` pair, so that the unmasked sum is exact.

Wire formats (big-endian lengths, :mod:`tensorguard.codec` framing)::

    b"TGPO" | 1 | body_len u32 | body | signature_len u32 | signature   (offer)
    b"TGAK" | 1 | body_len u32 | body | signature_len u32 | signature   (acknowledgement)
    b"TGSR" | 2 | body_len u32 | body | signature_len u32 | signature   (reveal)

Bodies are RFC 8785 canonical JSON (byte strings hex-encoded), parsed strictly against
the pydantic schemas ``_OfferBody``, ``_AckBody`` and ``_RevealBody`` (a missing, unknown
or mistyped field is refused by name), and only trusted after the signature verifies
under the claimed sender's key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from typing import Annotated, Final, Literal, TypeVar, get_args

from pydantic import AfterValidator, BeforeValidator

from tensorguard.codec import (
    CodecError,
    FrameReader,
    FrameWriter,
    Sha256Hex,
    StrictModel,
    canonical_json,
    parse_canonical_json,
    validate_model,
)
from tensorguard.crypto import (
    CIPHERTEXT_SIZE,
    CompositeSigner,
    CompositeVerifyKey,
    CryptoError,
    SignatureError,
    XWingPrivateKey,
    XWingPublicKey,
    encode_info,
    hkdf_sha256,
    xwing_encapsulate,
)
from tensorguard.federation._errors import FederationError
from tensorguard.federation._masking import SEED_SIZE, RevealedMasks, SiteMaskSeeds
from tensorguard.federation._round_spec import ROUND_ID
from tensorguard.sites import SiteRegistryError, validate_site_id

OFFER_MAGIC: Final = b"TGPO"
ACK_MAGIC: Final = b"TGAK"
REVEAL_MAGIC: Final = b"TGSR"
VERSION: Final = 1
REVEAL_VERSION: Final = 2
"""Version 2 reveals carry the revealer's self seed (version 1 had pairwise seeds only)."""
OfferFormat = Literal["tensorguard.federation.pairwise-offer/v1"]
AckFormat = Literal["tensorguard.federation.accepted-set-ack/v1"]
RevealFormat = Literal["tensorguard.federation.seed-reveal/v2"]
OFFER_FORMAT: Final[str] = get_args(OfferFormat)[0]
ACK_FORMAT: Final[str] = get_args(AckFormat)[0]
REVEAL_FORMAT: Final[str] = get_args(RevealFormat)[0]
OFFER_SIGNATURE_CONTEXT: Final = b"tensorguard/federation/pairwise-offer/v1"
ACK_SIGNATURE_CONTEXT: Final = b"tensorguard/federation/accepted-set-ack/v1"
REVEAL_SIGNATURE_CONTEXT: Final = b"tensorguard/federation/seed-reveal/v2"
PAIR_SALT: Final = b"tensorguard/federation/pair-secret/v1"
ROUND_SALT: Final = b"tensorguard/federation/pair-round-seed/v1"
SELF_SALT: Final = b"tensorguard/federation/self-mask-seed/v1"
PAIR_SECRET_SIZE: Final = 32
SELF_SECRET_SIZE: Final = 32
MAX_BODY_BYTES: Final = 1024 * 1024
MAX_SIGNATURE_BYTES: Final = 16 * 1024
EPOCH_ID: Final = ROUND_ID
"""Epoch ids follow the round id syntax."""


class PairwiseError(FederationError):
    """A pairwise offer or seed reveal is malformed, unsigned, forged or inconsistent."""


class RevealRefusedError(PairwiseError):
    """A site refused to reveal a seed: doing so could unmask an accepted update."""


# --- helpers ------------------------------------------------------------------------
def _check_id(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise PairwiseError(f"{what} {value!r} is not a valid identifier")
    return value


def _check_site(site_id: str) -> str:
    try:
        return validate_site_id(site_id)
    except SiteRegistryError as exc:
        raise PairwiseError(str(exc)) from exc


def _ordered(site_a: str, site_b: str) -> tuple[str, str]:
    if site_a == site_b:
        raise PairwiseError(f"site {site_a!r} cannot pair with itself")
    return (site_a, site_b) if site_a < site_b else (site_b, site_a)


def _frame(magic: bytes, body: bytes, signature: bytes, version: int = VERSION) -> bytes:
    return (
        FrameWriter(magic, version)
        .frame(body, length_size=4)
        .frame(signature, length_size=4)
        .to_bytes()
    )


BodyT = TypeVar("BodyT", bound=StrictModel)


def _unframe(
    data: bytes,
    magic: bytes,
    what: str,
    model: type[BodyT],
    version: int = VERSION,
) -> tuple[bytes, bytes, BodyT]:
    """Split the framing, parse the canonical JSON body and validate it against ``model``."""
    try:
        reader = FrameReader(data, magic=magic, version=version, what=what)
        body = reader.frame(length_size=4, max_bytes=MAX_BODY_BYTES, field="body")
        signature = reader.frame(length_size=4, max_bytes=MAX_SIGNATURE_BYTES, field="signature")
        reader.finish()
        document = parse_canonical_json(body, what=f"{what} body", allow_floats=False)
        parsed = validate_model(model, document, what=f"{what} body")
    except CodecError as exc:
        raise PairwiseError(str(exc)) from None
    return body, signature, parsed


# --- body schemas: the signed JSON of offers, acknowledgements and reveals ----------
def _identifier(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"is not a valid {what}")
        return value

    return check


def _site_id(value: str) -> str:
    try:
        return validate_site_id(value)
    except SiteRegistryError as exc:
        raise ValueError(str(exc)) from None


def _hex_of(size: int) -> Callable[[object], bytes]:
    def decode(value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError("must be lower-case hex text")
        try:
            decoded = bytes.fromhex(value)
        except ValueError:
            raise ValueError("is not hex") from None
        if len(decoded) != size or decoded.hex() != value:
            raise ValueError(f"must be {size} bytes in lower-case hex")
        return decoded

    return decode


def _sorted_unique(sites: list[str]) -> list[str]:
    if sites != sorted(set(sites)):
        raise ValueError("must be sorted without repeats")
    return sites


EpochIdField = Annotated[str, AfterValidator(_identifier(EPOCH_ID, "epoch id"))]
RoundIdField = Annotated[str, AfterValidator(_identifier(ROUND_ID, "round id"))]
SiteIdField = Annotated[str, AfterValidator(_site_id)]
SiteListField = Annotated[list[SiteIdField], AfterValidator(_sorted_unique)]
SeedField = Annotated[bytes, BeforeValidator(_hex_of(SEED_SIZE))]


class _OfferBody(StrictModel):
    format: OfferFormat
    epoch_id: EpochIdField
    sender: SiteIdField
    recipient: SiteIdField
    sender_key_fingerprint: Sha256Hex
    recipient_kem_fingerprint: Sha256Hex
    kem_ciphertext: Annotated[bytes, BeforeValidator(_hex_of(CIPHERTEXT_SIZE))]


class _AckBody(StrictModel):
    format: AckFormat
    epoch_id: EpochIdField
    round_id: RoundIdField
    site: SiteIdField
    signer_fingerprint: Sha256Hex
    accepted: SiteListField


class _RevealBody(StrictModel):
    format: RevealFormat
    epoch_id: EpochIdField
    round_id: RoundIdField
    revealer: SiteIdField
    signer_fingerprint: Sha256Hex
    accepted: SiteListField
    seeds: dict[SiteIdField, SeedField]
    self_seed: SeedField


def _verify(
    body: bytes, signature: bytes, key: CompositeVerifyKey, context: bytes, what: str
) -> None:
    if not signature:
        raise PairwiseError(f"{what} is unsigned")
    try:
        key.verify(body, signature, context)
    except SignatureError as exc:
        raise PairwiseError(f"{what} signature does not verify: {exc}") from exc


def _verify_registered(
    signer: str,
    signer_fingerprint: str,
    signed: tuple[bytes, bytes],
    signing_keys: Mapping[str, CompositeVerifyKey],
    context: bytes,
    what: str,
) -> None:
    """Verify ``signed`` (body, signature) under ``signer``'s registered key, which must
    also be the key the message names."""
    key = signing_keys.get(signer)
    if key is None:
        raise PairwiseError(f"{what} from unregistered site {signer!r}")
    _verify(*signed, key, context, what)
    if signer_fingerprint != key.fingerprint():
        raise PairwiseError(f"{what} names a different signing key than its signer's")


# --- establishment ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PairwiseOffer:
    """Site ``sender`` encapsulated a pair secret to ``recipient``'s X-Wing key."""

    epoch_id: str
    sender: str
    recipient: str
    sender_key_fingerprint: str
    recipient_kem_fingerprint: str
    kem_ciphertext: bytes = dataclasses.field(repr=False)
    signature: bytes = dataclasses.field(default=b"", repr=False)

    def body(self) -> bytes:
        """The canonical JSON the sender signs."""
        return canonical_json(
            {
                "format": OFFER_FORMAT,
                "epoch_id": self.epoch_id,
                "sender": self.sender,
                "recipient": self.recipient,
                "sender_key_fingerprint": self.sender_key_fingerprint,
                "recipient_kem_fingerprint": self.recipient_kem_fingerprint,
                "kem_ciphertext": self.kem_ciphertext.hex(),
            }
        )

    def to_bytes(self) -> bytes:
        """``b"TGPO" | 1 | body | signature`` (see the module docstring)."""
        return _frame(OFFER_MAGIC, self.body(), self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> PairwiseOffer:
        """Parse strictly; the result is *not* verified (see :meth:`verify`)."""
        what = "pairwise offer"
        body, signature, parsed = _unframe(data, OFFER_MAGIC, what, _OfferBody)
        offer = cls(
            epoch_id=parsed.epoch_id,
            sender=parsed.sender,
            recipient=parsed.recipient,
            sender_key_fingerprint=parsed.sender_key_fingerprint,
            recipient_kem_fingerprint=parsed.recipient_kem_fingerprint,
            kem_ciphertext=parsed.kem_ciphertext,
            signature=signature,
        )
        if offer.body() != body:
            raise PairwiseError(f"{what} body does not re-encode to itself")
        return offer

    def verify(self, key: CompositeVerifyKey) -> None:
        """Raise :class:`PairwiseError` unless ``key`` signed this offer and is its named key."""
        _verify(self.body(), self.signature, key, OFFER_SIGNATURE_CONTEXT, "pairwise offer")
        if self.sender_key_fingerprint != key.fingerprint():
            raise PairwiseError("pairwise offer names a different signing key than its signer's")


def _pair_secret(shared_secret: bytes, offer: PairwiseOffer) -> bytes:
    low, high = _ordered(offer.sender, offer.recipient)
    return hkdf_sha256(
        shared_secret,
        salt=PAIR_SALT,
        info=encode_info(
            b"pair-secret",
            offer.epoch_id.encode(),
            low.encode(),
            high.encode(),
            hashlib.sha256(offer.kem_ciphertext).digest(),
            offer.recipient_kem_fingerprint.encode(),
            offer.sender_key_fingerprint.encode(),
        ),
        length=PAIR_SECRET_SIZE,
    )


def offer_recipients(site_id: str, roster: Collection[str]) -> list[str]:
    """The peers ``site_id`` encapsulates to: every roster site sorting after it."""
    return sorted(peer for peer in roster if peer > site_id)


@dataclasses.dataclass(frozen=True)
class OutgoingOffers:
    """What a site sends (signed offers) and keeps (its half of those pair secrets)."""

    offers: tuple[PairwiseOffer, ...]
    secrets: Mapping[str, bytes] = dataclasses.field(repr=False)

    def messages(self) -> list[bytes]:
        """The offers as wire bytes, for the coordinator to relay."""
        return [offer.to_bytes() for offer in self.offers]


def create_pairwise_offers(
    epoch_id: str,
    site_id: str,
    signer: CompositeSigner,
    roster_kem_keys: Mapping[str, XWingPublicKey],
) -> OutgoingOffers:
    """Encapsulate to every enrolled site sorting after ``site_id`` and sign the offers.

    ``roster_kem_keys`` maps each enrolled site to its X-Wing public key, taken from
    the trusted site registry (never from the relay).
    """
    offers: list[PairwiseOffer] = []
    secrets: dict[str, bytes] = {}
    for peer in offer_recipients(site_id, roster_kem_keys):
        offer, secret = create_pairwise_offer(
            epoch_id, site_id, signer, peer, roster_kem_keys[peer]
        )
        offers.append(offer)
        secrets[peer] = secret
    return OutgoingOffers(tuple(offers), secrets)


def create_pairwise_offer(
    epoch_id: str,
    site_id: str,
    signer: CompositeSigner,
    peer: str,
    peer_kem_key: XWingPublicKey,
) -> tuple[PairwiseOffer, bytes]:
    """Encapsulate to one ``peer`` and sign the offer; return it and the pair secret."""
    _check_id(epoch_id, EPOCH_ID, "epoch id")
    _check_site(site_id)
    _check_site(peer)
    if peer == site_id:
        raise PairwiseError("a site cannot make a pairwise offer to itself")
    try:
        shared_secret, ciphertext = xwing_encapsulate(peer_kem_key)
    except CryptoError as exc:
        raise PairwiseError(f"X-Wing encapsulation to site {peer!r} failed: {exc}") from exc
    unsigned = PairwiseOffer(
        epoch_id,
        site_id,
        peer,
        signer.public_key().fingerprint(),
        peer_kem_key.fingerprint(),
        ciphertext,
    )
    signature = signer.sign(unsigned.body(), OFFER_SIGNATURE_CONTEXT)
    return dataclasses.replace(unsigned, signature=signature), _pair_secret(shared_secret, unsigned)


def open_pairwise_offer(
    data: bytes,
    *,
    epoch_id: str,
    site_id: str,
    kem_private: XWingPrivateKey,
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> tuple[str, bytes]:
    """Verify an offer addressed to ``site_id`` and return ``(sender, pair_secret)``.

    Refused: malformed or unsigned offers, unknown senders, signatures that do not
    verify under the sender's registered key, another epoch or recipient, an offer
    encapsulated to another X-Wing key, and an offer to oneself. (Which site of a pair
    offers is up to the caller: :func:`establish_pairwise_secrets` expects the smaller
    one, :mod:`tensorguard.federation._pair_exchange` whichever site comes first.)
    """
    offer = PairwiseOffer.from_bytes(data)
    key = signing_keys.get(offer.sender)
    if key is None:
        raise PairwiseError(f"pairwise offer from unregistered site {offer.sender!r}")
    offer.verify(key)
    if offer.epoch_id != epoch_id:
        raise PairwiseError(f"pairwise offer is for epoch {offer.epoch_id!r}, not {epoch_id!r}")
    if offer.recipient != site_id:
        raise PairwiseError(f"pairwise offer is addressed to {offer.recipient!r}, not {site_id!r}")
    if offer.sender == offer.recipient:
        raise PairwiseError("a pairwise offer cannot be addressed to its own sender")
    if offer.recipient_kem_fingerprint != kem_private.public_key().fingerprint():
        raise PairwiseError("pairwise offer was encapsulated to another X-Wing key of this site")
    try:
        shared_secret = kem_private.decapsulate(offer.kem_ciphertext)
    except CryptoError as exc:
        raise PairwiseError(f"X-Wing decapsulation failed: {exc}") from exc
    return offer.sender, _pair_secret(shared_secret, offer)


@dataclasses.dataclass(frozen=True)
class PairwiseSecrets:
    """One site's secrets for one key epoch: peer id -> 32-byte pair secret, and the
    site's own self-mask secret, which it shares with nobody."""

    epoch_id: str
    site_id: str
    secrets: Mapping[str, bytes] = dataclasses.field(repr=False)
    self_secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        _check_id(self.epoch_id, EPOCH_ID, "epoch id")
        _check_site(self.site_id)
        if len(self.self_secret) != SELF_SECRET_SIZE:
            raise PairwiseError(f"the self-mask secret must be {SELF_SECRET_SIZE} bytes")
        for peer, secret in self.secrets.items():
            _check_site(peer)
            if peer == self.site_id or len(secret) != PAIR_SECRET_SIZE:
                raise PairwiseError(f"invalid pair secret for peer {peer!r}")

    @property
    def peers(self) -> tuple[str, ...]:
        """The other enrolled sites, sorted."""
        return tuple(sorted(self.secrets))

    def round_seed(self, peer: str, round_id: str) -> bytes:
        """The seed this site and ``peer`` share for ``round_id``."""
        _check_id(round_id, ROUND_ID, "round id")
        secret = self.secrets.get(peer)
        if secret is None:
            raise PairwiseError(f"site {self.site_id!r} shares no secret with {peer!r}")
        low, high = _ordered(self.site_id, peer)
        return hkdf_sha256(
            secret,
            salt=ROUND_SALT,
            info=encode_info(
                b"round-seed",
                self.epoch_id.encode(),
                round_id.encode(),
                low.encode(),
                high.encode(),
            ),
            length=SEED_SIZE,
        )

    def round_seeds(self, round_id: str) -> dict[str, bytes]:
        """Every peer's round seed for ``round_id`` (the input of the masking step)."""
        return {peer: self.round_seed(peer, round_id) for peer in self.peers}

    def self_seed(self, round_id: str) -> bytes:
        """The seed of this site's own self mask for ``round_id`` (revealed only once
        its update is accepted)."""
        _check_id(round_id, ROUND_ID, "round id")
        return hkdf_sha256(
            self.self_secret,
            salt=SELF_SALT,
            info=encode_info(
                b"self-seed",
                self.epoch_id.encode(),
                round_id.encode(),
                self.site_id.encode(),
            ),
            length=SEED_SIZE,
        )

    def mask_seeds(self, round_id: str) -> SiteMaskSeeds:
        """Everything this site masks its update with in ``round_id``."""
        return SiteMaskSeeds(self.round_seeds(round_id), self.self_seed(round_id))


def establish_pairwise_secrets(
    *,
    epoch_id: str,
    site_id: str,
    roster: Collection[str],
    outgoing: OutgoingOffers,
    incoming: Sequence[bytes],
    kem_private: XWingPrivateKey,
    signing_keys: Mapping[str, CompositeVerifyKey],
    self_secret: bytes,
) -> PairwiseSecrets:
    """Combine the secrets a site offered with those offered to it into its epoch secrets
    (``self_secret``: the site's own random self-mask secret for the epoch).

    Requires exactly one pair secret per other roster site: ``outgoing`` must cover the
    peers sorting after ``site_id`` and ``incoming`` (relayed offers, verified here)
    those sorting before it. Byte-identical copies of an offer are ignored; two
    different offers from one sender are refused.
    """
    if site_id not in roster:
        raise PairwiseError(f"site {site_id!r} is not in the epoch's roster")
    peers = set(roster) - {site_id}
    expected_out = set(offer_recipients(site_id, roster))
    if set(outgoing.secrets) != expected_out:
        raise PairwiseError(
            f"site {site_id!r} must have offered to exactly {sorted(expected_out)}, "
            f"offered to {sorted(outgoing.secrets)}"
        )
    received: dict[str, bytes] = {}
    seen: dict[str, bytes] = {}
    for message in incoming:
        offer = PairwiseOffer.from_bytes(message)
        previous = seen.get(offer.sender)
        if previous is not None:
            if previous != bytes(message):
                raise PairwiseError(f"site {offer.sender!r} sent two different offers")
            continue
        seen[offer.sender] = bytes(message)
        sender, secret = open_pairwise_offer(
            message,
            epoch_id=epoch_id,
            site_id=site_id,
            kem_private=kem_private,
            signing_keys=signing_keys,
        )
        if sender not in peers:
            raise PairwiseError(f"pairwise offer from {sender!r}, who is not in the roster")
        received[sender] = secret
    expected_in = peers - expected_out
    if set(received) != expected_in:
        missing = sorted(expected_in - set(received))
        raise PairwiseError(f"site {site_id!r} has no pairwise offer from {missing}")
    return PairwiseSecrets(epoch_id, site_id, {**outgoing.secrets, **received}, self_secret)


# --- closing a round: acknowledgements of the accepted set, then seed reveals --------
@dataclasses.dataclass(frozen=True)
class AcceptedSetAck:
    """A site's signed statement that ``accepted`` is the round's one accepted set."""

    epoch_id: str
    round_id: str
    site: str
    signer_fingerprint: str
    accepted: tuple[str, ...]
    signature: bytes = dataclasses.field(default=b"", repr=False)

    def body(self) -> bytes:
        """The canonical JSON the site signs."""
        return canonical_json(
            {
                "format": ACK_FORMAT,
                "epoch_id": self.epoch_id,
                "round_id": self.round_id,
                "site": self.site,
                "signer_fingerprint": self.signer_fingerprint,
                "accepted": list(self.accepted),
            }
        )

    def to_bytes(self) -> bytes:
        """``b"TGAK" | 1 | body | signature`` (see the module docstring)."""
        return _frame(ACK_MAGIC, self.body(), self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> AcceptedSetAck:
        """Parse strictly; the result is *not* verified (see :func:`verified_ack_sites`)."""
        what = "accepted-set acknowledgement"
        body, signature, parsed = _unframe(data, ACK_MAGIC, what, _AckBody)
        ack = cls(
            epoch_id=parsed.epoch_id,
            round_id=parsed.round_id,
            site=parsed.site,
            signer_fingerprint=parsed.signer_fingerprint,
            accepted=tuple(parsed.accepted),
            signature=signature,
        )
        if ack.body() != body:
            raise PairwiseError(f"{what} body does not re-encode to itself")
        return ack


def _check_request(
    secrets: PairwiseSecrets, round_id: str, accepted: frozenset[str], dropped: frozenset[str]
) -> None:
    """Refuse a request this site must not answer: it is not accepted itself, a site is
    both accepted and dropped, or a site is not enrolled this epoch."""
    _check_id(round_id, ROUND_ID, "round id")
    if secrets.site_id not in accepted:
        raise RevealRefusedError(
            f"site {secrets.site_id!r} is not among the accepted sites of round {round_id!r}; "
            "it acknowledges and reveals nothing for a sum it is not part of"
        )
    unmasking = sorted(dropped & accepted)
    if unmasking:
        raise RevealRefusedError(
            f"refusing to reveal the seeds shared with {unmasking}: their updates were "
            "accepted, and the seeds would unmask them"
        )
    unknown = sorted((accepted | dropped) - set(secrets.peers) - {secrets.site_id})
    if unknown:
        raise RevealRefusedError(f"the request names sites not enrolled this epoch: {unknown}")


def acknowledge_accepted_set(
    secrets: PairwiseSecrets,
    *,
    round_id: str,
    accepted: Collection[str],
    signer: CompositeSigner,
    answered: MutableMapping[str, frozenset[str]],
) -> AcceptedSetAck:
    """Sign ``accepted`` as this round's accepted set, at most one set per round.

    ``answered`` (round id -> the accepted set this site acknowledged, kept by the site
    across requests) is updated; a second request for the same round with a different
    set raises :class:`RevealRefusedError`, as does a set without this site.
    """
    accepted_set = frozenset(accepted)
    _check_request(secrets, round_id, accepted_set, frozenset())
    previous = answered.get(round_id)
    if previous is not None and previous != accepted_set:
        raise RevealRefusedError(
            f"site {secrets.site_id!r} already acknowledged another accepted set for round "
            f"{round_id!r}; acknowledging two could unmask a site accepted in one of them"
        )
    unsigned = AcceptedSetAck(
        epoch_id=secrets.epoch_id,
        round_id=round_id,
        site=secrets.site_id,
        signer_fingerprint=signer.public_key().fingerprint(),
        accepted=tuple(sorted(accepted_set)),
    )
    signature = signer.sign(unsigned.body(), ACK_SIGNATURE_CONTEXT)
    answered[round_id] = accepted_set
    return dataclasses.replace(unsigned, signature=signature)


def verified_ack_sites(
    acks: Sequence[bytes],
    *,
    epoch_id: str,
    round_id: str,
    accepted: Collection[str],
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> set[str]:
    """The sites whose acknowledgement of exactly ``accepted`` (this epoch and round)
    verifies under their registered key; any other acknowledgement is refused."""
    accepted_set = set(accepted)
    sites: set[str] = set()
    for message in acks:
        ack = AcceptedSetAck.from_bytes(message)
        _verify_registered(
            ack.site,
            ack.signer_fingerprint,
            (ack.body(), ack.signature),
            signing_keys,
            ACK_SIGNATURE_CONTEXT,
            "acknowledgement",
        )
        if (ack.epoch_id, ack.round_id) != (epoch_id, round_id):
            raise PairwiseError(f"acknowledgement from {ack.site!r} is for another round")
        if set(ack.accepted) != accepted_set:
            raise PairwiseError(
                f"site {ack.site!r} acknowledged a different accepted set "
                f"{list(ack.accepted)}, not {sorted(accepted_set)}"
            )
        sites.add(ack.site)
    return sites


@dataclasses.dataclass(frozen=True)
class SeedReveal:
    """A survivor's signed self seed and round seeds with dropped sites, bound to the
    accepted set."""

    epoch_id: str
    round_id: str
    revealer: str
    signer_fingerprint: str
    accepted: tuple[str, ...]
    seeds: Mapping[str, bytes] = dataclasses.field(repr=False)
    self_seed: bytes = dataclasses.field(repr=False)
    signature: bytes = dataclasses.field(default=b"", repr=False)

    def body(self) -> bytes:
        """The canonical JSON the revealer signs."""
        return canonical_json(
            {
                "format": REVEAL_FORMAT,
                "epoch_id": self.epoch_id,
                "round_id": self.round_id,
                "revealer": self.revealer,
                "signer_fingerprint": self.signer_fingerprint,
                "accepted": list(self.accepted),
                "seeds": {peer: seed.hex() for peer, seed in self.seeds.items()},
                "self_seed": self.self_seed.hex(),
            }
        )

    def to_bytes(self) -> bytes:
        """``b"TGSR" | 2 | body | signature`` (see the module docstring)."""
        return _frame(REVEAL_MAGIC, self.body(), self.signature, REVEAL_VERSION)

    @classmethod
    def from_bytes(cls, data: bytes) -> SeedReveal:
        """Parse strictly; the result is *not* verified (see :func:`verify_seed_reveal`)."""
        what = "seed reveal"
        body, signature, parsed = _unframe(data, REVEAL_MAGIC, what, _RevealBody, REVEAL_VERSION)
        reveal = cls(
            epoch_id=parsed.epoch_id,
            round_id=parsed.round_id,
            revealer=parsed.revealer,
            signer_fingerprint=parsed.signer_fingerprint,
            accepted=tuple(parsed.accepted),
            seeds=parsed.seeds,
            self_seed=parsed.self_seed,
            signature=signature,
        )
        if reveal.body() != body:
            raise PairwiseError(f"{what} body does not re-encode to itself")
        return reveal


def reveal_seeds(
    secrets: PairwiseSecrets,
    *,
    round_id: str,
    accepted: Collection[str],
    dropped: Collection[str],
    signer: CompositeSigner,
    answered: Mapping[str, frozenset[str]],
    acks: Sequence[bytes],
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> SeedReveal:
    """Close the round for this site: sign its self seed and its round seeds with the
    ``dropped`` sites.

    Raises :class:`RevealRefusedError` unless this site acknowledged exactly ``accepted``
    for this round (``answered``, see :func:`acknowledge_accepted_set`) and ``acks``
    hold a valid acknowledgement of the same set from every accepted site; also when a
    requested peer is in ``accepted`` (the seed would unmask it), when this site is not
    in ``accepted``, or when a site is both accepted and dropped or not enrolled.
    """
    accepted_set = frozenset(accepted)
    dropped_set = frozenset(dropped)
    _check_request(secrets, round_id, accepted_set, dropped_set)
    if answered.get(round_id) != accepted_set:
        raise RevealRefusedError(
            f"site {secrets.site_id!r} has not acknowledged this accepted set for round "
            f"{round_id!r}; it reveals only for the one set it acknowledged"
        )
    try:
        acknowledged = verified_ack_sites(
            acks,
            epoch_id=secrets.epoch_id,
            round_id=round_id,
            accepted=accepted_set,
            signing_keys=signing_keys,
        )
    except PairwiseError as exc:
        raise RevealRefusedError(f"refusing to reveal: {exc}") from exc
    missing = sorted(accepted_set - acknowledged)
    if missing:
        raise RevealRefusedError(
            f"refusing to reveal: no acknowledgement of the accepted set from {missing}; "
            "without every accepted site's, the set could differ from the one others saw"
        )
    unsigned = SeedReveal(
        epoch_id=secrets.epoch_id,
        round_id=round_id,
        revealer=secrets.site_id,
        signer_fingerprint=signer.public_key().fingerprint(),
        accepted=tuple(sorted(accepted_set)),
        seeds={peer: secrets.round_seed(peer, round_id) for peer in sorted(dropped_set)},
        self_seed=secrets.self_seed(round_id),
    )
    signature = signer.sign(unsigned.body(), REVEAL_SIGNATURE_CONTEXT)
    return dataclasses.replace(unsigned, signature=signature)


def verify_seed_reveal(
    data: bytes,
    *,
    epoch_id: str,
    round_id: str,
    accepted: Collection[str],
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> SeedReveal:
    """Parse and verify a reveal for this epoch, round and accepted set.

    Refused: malformed, unsigned or forged reveals, another epoch, round or accepted
    set, a revealer outside the accepted set, and any seed for an accepted site.
    """
    reveal = SeedReveal.from_bytes(data)
    _verify_registered(
        reveal.revealer,
        reveal.signer_fingerprint,
        (reveal.body(), reveal.signature),
        signing_keys,
        REVEAL_SIGNATURE_CONTEXT,
        "seed reveal",
    )
    if (reveal.epoch_id, reveal.round_id) != (epoch_id, round_id):
        raise PairwiseError(
            f"seed reveal is for epoch {reveal.epoch_id!r} round {reveal.round_id!r}, "
            f"expected {epoch_id!r} round {round_id!r}"
        )
    if set(reveal.accepted) != set(accepted):
        raise PairwiseError("seed reveal was signed for a different set of accepted sites")
    if reveal.revealer not in reveal.accepted:
        raise PairwiseError(f"site {reveal.revealer!r} revealed seeds without being accepted")
    leaked = sorted(set(reveal.seeds) & set(reveal.accepted))
    if leaked:
        raise PairwiseError(f"seed reveal contains seeds of accepted sites {leaked}")
    return reveal


def collect_revealed_seeds(
    reveals: Sequence[bytes],
    *,
    epoch_id: str,
    round_id: str,
    roster: Collection[str],
    accepted: Collection[str],
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> RevealedMasks:
    """Verify every reveal and return the self seeds of the accepted sites and
    ``{(survivor, dropped): round_seed}``.

    ``dropped`` is ``roster - accepted``. Every accepted site must have revealed (one
    reveal per survivor, identical copies ignored) its self seed and its seed with every
    dropped site, otherwise the unmasked sum would not be exact and
    :class:`PairwiseError` is raised.
    """
    accepted_set = set(accepted)
    if not accepted_set <= set(roster):
        raise PairwiseError(f"accepted sites {sorted(accepted_set - set(roster))} not enrolled")
    dropped = set(roster) - accepted_set
    by_survivor: dict[str, SeedReveal] = {}
    for message in reveals:
        reveal = verify_seed_reveal(
            message,
            epoch_id=epoch_id,
            round_id=round_id,
            accepted=accepted_set,
            signing_keys=signing_keys,
        )
        previous = by_survivor.get(reveal.revealer)
        if previous is not None and previous.body() != reveal.body():
            raise PairwiseError(f"site {reveal.revealer!r} sent two different seed reveals")
        by_survivor[reveal.revealer] = reveal
    pairs: dict[tuple[str, str], bytes] = {}
    self_seeds: dict[str, bytes] = {}
    for survivor in sorted(accepted_set):
        answer = by_survivor.get(survivor)
        if answer is None or set(answer.seeds) != dropped:
            raise PairwiseError(
                f"site {survivor!r} has not revealed its self seed and its seeds with every "
                f"dropped site {sorted(dropped)}; the sum cannot be unmasked exactly"
            )
        self_seeds[survivor] = answer.self_seed
        for peer, seed in answer.seeds.items():
            pairs[(survivor, peer)] = seed
    return RevealedMasks(pairs, self_seeds)


def close_round_in_process(
    secrets: Mapping[str, PairwiseSecrets],
    signers: Mapping[str, CompositeSigner],
    *,
    round_id: str,
    accepted: Collection[str],
    dropped: Collection[str],
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> list[bytes]:
    """Every accepted site acknowledges ``accepted``, then reveals: the two steps of
    closing a round, for sites that run in one process (simulations, benchmarks, tests).

    Each site's ``answered`` record lives only for this call; a deployment keeps it at
    the site across requests (see ``tensorguard_assets.federation.seed_reveals``).
    """
    answered: dict[str, dict[str, frozenset[str]]] = {site: {} for site in accepted}
    acks = [
        acknowledge_accepted_set(
            secrets[site],
            round_id=round_id,
            accepted=accepted,
            signer=signers[site],
            answered=answered[site],
        ).to_bytes()
        for site in sorted(accepted)
    ]
    return [
        reveal_seeds(
            secrets[site],
            round_id=round_id,
            accepted=accepted,
            dropped=dropped,
            signer=signers[site],
            answered=answered[site],
            acks=acks,
            signing_keys=signing_keys,
        ).to_bytes()
        for site in sorted(accepted)
    ]
