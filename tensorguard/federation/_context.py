"""CKKS contexts: the federation's key ceremony, public and secret contexts.

The ceremony creates one TenSEAL CKKS context. Its public part (public key only: no
secret key, no relinearisation or Galois keys, which additions never need) goes to
every site and to the aggregator. The secret context goes only to the key custodian,
through a :class:`SecretStore` such as a TensorGuard key provider (encrypted at rest).

The public context is identified by the SHA-256 of its serialised bytes; SEAL's
serialisation is deterministic, so the custodian can recompute that digest from the
secret context and check it against the digest every site update binds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

import tenseal as ts

from tensorguard.codec import (
    CodecError,
    Sha256Hex,
    StrictModel,
    parse_json_object,
    validate_model,
)
from tensorguard.digest import sha256_bytes
from tensorguard.durable import atomic_write_bytes
from tensorguard.federation._errors import ContextError
from tensorguard.federation._params import FederationParams

PUBLIC_CONTEXT_FILENAME = "federation_public_context.tenseal"
PARAMS_FILENAME = "federation_params.json"
DEFAULT_SECRET_NAME = "federation-ckks-secret-context"  # noqa: S105 (a name, not a secret)
ParamsFormat = Literal["tensorguard.federation.params/v1"]
PARAMS_FORMAT: str = get_args(ParamsFormat)[0]


class _ParamsDocument(StrictModel):
    """``federation_params.json`` as :meth:`PublicFederation.write` writes it.

    ``params`` is validated by :class:`FederationParams` under its own configuration
    (the same model, and the same HE Standard checks, as the ceremony's settings).
    """

    format: ParamsFormat
    params: FederationParams
    public_context_sha256: Sha256Hex
    security_level_bits: int


class SecretStore(Protocol):
    """Where the custodian keeps named secret blobs (e.g. a TensorGuard KeyProvider)."""

    def store_secret(self, name: str, data: bytes) -> None:
        """Persist ``data`` under ``name``, protected at rest."""
        ...

    def load_secret(self, name: str) -> bytes:
        """Return the blob stored under ``name``."""
        ...


def _public_bytes(context: ts.Context) -> bytes:
    data: bytes = context.serialize(
        save_public_key=True,
        save_secret_key=False,
        save_galois_keys=False,
        save_relin_keys=False,
    )
    return data


def _load_context(data: bytes, what: str, n_threads: int | None = None) -> ts.Context:
    try:
        return ts.context_from(data, n_threads=n_threads)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ContextError(
            f"{what} does not parse as a TenSEAL context ({type(exc).__name__}); "
            "re-export it from the key ceremony"
        ) from exc


def _check_params(context: ts.Context, params: FederationParams, what: str) -> None:
    if context.global_scale != params.scale:
        raise ContextError(
            f"{what} has scale {context.global_scale}, the federation parameters say "
            f"2^{params.scale_bits}; the context and parameter file are from different "
            "ceremonies"
        )
    seal = context.seal_context().data
    degree = seal.key_context_data().parms().poly_modulus_degree()
    total_bits = seal.key_context_data().total_coeff_modulus_bit_count()
    data_bits = seal.first_context_data().total_coeff_modulus_bit_count()
    primes = len(params.coeff_mod_bit_sizes)
    if (
        degree != params.poly_modulus_degree
        or not params.total_modulus_bits - (primes - 1) <= total_bits <= params.total_modulus_bits
        or not params.data_modulus_bits - (primes - 2) <= data_bits <= params.data_modulus_bits
    ):
        raise ContextError(
            f"{what} uses N={degree} with a {total_bits}-bit modulus, the federation "
            f"parameters say N={params.poly_modulus_degree} with primes of "
            f"{params.coeff_mod_bit_sizes} bits; re-run or re-export the key ceremony"
        )


@dataclass(frozen=True)
class PublicFederation:
    """What sites and the aggregator hold: the parameters and the public context."""

    params: FederationParams
    context_bytes: bytes = field(repr=False)

    def __post_init__(self) -> None:
        context = _load_context(self.context_bytes, "the federation public context")
        if context.is_private() or context.has_secret_key():
            raise ContextError(
                "the federation public context contains a secret key; sites and the "
                "aggregator must only receive the public export of the key ceremony"
            )
        _check_params(context, self.params, "the federation public context")

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the public context bytes: the federation key's identity."""
        return sha256_bytes(self.context_bytes)

    def load_context(self, n_threads: int | None = None) -> ts.Context:
        """A fresh TenSEAL context without any secret key (checked)."""
        context = _load_context(self.context_bytes, "the federation public context", n_threads)
        if context.is_private():
            raise ContextError("the federation public context unexpectedly holds a secret key")
        return context

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write the public context and the parameter file; return both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        context_path = out_dir / PUBLIC_CONTEXT_FILENAME
        params_path = out_dir / PARAMS_FILENAME
        atomic_write_bytes(context_path, self.context_bytes)
        document = {
            "format": PARAMS_FORMAT,
            "params": self.params.model_dump(mode="json"),
            "public_context_sha256": self.digest,
            "security_level_bits": self.params.security_level,
        }
        atomic_write_bytes(params_path, (json.dumps(document, indent=2) + "\n").encode())
        return context_path, params_path

    @classmethod
    def read(cls, directory: Path) -> PublicFederation:
        """Load what :meth:`write` wrote, checking the context digest."""
        params_path = directory / PARAMS_FILENAME
        context_path = directory / PUBLIC_CONTEXT_FILENAME
        try:
            params_bytes = params_path.read_bytes()
            context_bytes = context_path.read_bytes()
        except OSError as exc:
            raise ContextError(
                f"cannot read the federation public context from {directory}: {exc}; "
                "copy both files written by the key ceremony"
            ) from exc
        what = f"federation parameters {params_path}"
        try:
            document = validate_model(
                _ParamsDocument, parse_json_object(params_bytes, what=what), what=what
            )
        except CodecError as exc:
            raise ContextError(
                f"{exc}; copy the {PARAMS_FILENAME} written by the key ceremony"
            ) from None
        federation = cls(document.params, context_bytes)
        if document.public_context_sha256 != federation.digest:
            raise ContextError(
                f"{context_path} does not match the digest recorded in {params_path}; "
                "the files are from different ceremonies or were modified"
            )
        return federation


@dataclass(frozen=True)
class FederationKeys:
    """The full output of the ceremony. ``secret_context_bytes`` is secret."""

    public: PublicFederation
    secret_context_bytes: bytes = field(repr=False)


def create_federation_context(params: FederationParams | None = None) -> FederationKeys:
    """Generate a fresh CKKS key pair and split it into public and secret contexts."""
    params = params if params is not None else FederationParams()
    try:
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
    except (ValueError, RuntimeError) as exc:
        raise ContextError(f"TenSEAL rejected the CKKS parameters: {exc}") from exc
    context.global_scale = params.scale
    secret_bytes: bytes = context.serialize(
        save_public_key=True,
        save_secret_key=True,
        save_galois_keys=False,
        save_relin_keys=False,
    )
    return FederationKeys(PublicFederation(params, _public_bytes(context)), secret_bytes)


@dataclass(frozen=True)
class SecretFederation:
    """The custodian's view: parameters plus the context holding the secret key."""

    public: PublicFederation
    context: ts.Context = field(repr=False)


def load_secret_context(secret_context_bytes: bytes, public: PublicFederation) -> SecretFederation:
    """Load the custodian's secret context and check it belongs to ``public``."""
    context = _load_context(secret_context_bytes, "the federation secret context")
    if not context.is_private():
        raise ContextError(
            "the stored federation secret context holds no secret key; the custodian "
            "needs the secret export of the key ceremony"
        )
    _check_params(context, public.params, "the federation secret context")
    if sha256_bytes(_public_bytes(context)) != public.digest:
        raise ContextError(
            "the secret context does not belong to this federation's public context "
            "(public key digests differ); load the secret from the same ceremony"
        )
    return SecretFederation(public, context)


def load_secret_from_store(
    store: SecretStore, public: PublicFederation, name: str = DEFAULT_SECRET_NAME
) -> SecretFederation:
    """Fetch the secret context from ``store`` and check it (see :func:`load_secret_context`)."""
    return load_secret_context(store.load_secret(name), public)


@dataclass(frozen=True)
class CeremonyRecord:
    """What the ceremony reports: where the public files are, and their identity."""

    public_context_path: Path
    params_path: Path
    public_context_sha256: str
    secret_name: str
    params: FederationParams

    def to_json(self) -> dict[str, object]:
        """Plain values for a CLI or metadata (nothing secret)."""
        return {
            "public_context_path": str(self.public_context_path),
            "params_path": str(self.params_path),
            "public_context_sha256": self.public_context_sha256,
            "secret_name": self.secret_name,
            **self.params.summary(),
        }


def run_key_ceremony(
    out_dir: Path,
    secret_store: SecretStore,
    params: FederationParams | None = None,
    secret_name: str = DEFAULT_SECRET_NAME,
) -> CeremonyRecord:
    """Create the federation keys, store the secret, write the public files.

    The secret context is handed to ``secret_store`` only; nothing secret is written
    to ``out_dir``. The store is read back and checked before the public files are
    written, so a failed ceremony leaves no public key whose secret is lost.
    """
    keys = create_federation_context(params)
    secret_store.store_secret(secret_name, keys.secret_context_bytes)
    load_secret_from_store(secret_store, keys.public, secret_name)
    context_path, params_path = keys.public.write(out_dir)
    return CeremonyRecord(
        public_context_path=context_path,
        params_path=params_path,
        public_context_sha256=keys.public.digest,
        secret_name=secret_name,
        params=keys.public.params,
    )
