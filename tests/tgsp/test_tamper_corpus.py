"""A seeded corpus of byte-level mutations of a real package through verify and open.

Every mutated package must be refused with one of TGSP's own errors: none accepted, no
other exception (a traceback is a bug: it means some input was not anticipated). A
second corpus mutates only the header and re-signs it with the trusted producer key (a
faulty or compromised producer), so the header parser and the opener's own checks face
validly signed garbage. Counts per error type are printed (``pytest -s``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import TGSPError, TrustStore, open_package, verify_package
from tensorguard.tgsp._format import PREAMBLE_SIZE, SIGNATURE_CONTEXT, SIGNATURE_LENGTH, Preamble
from tensorguard.tgsp._header import decode_header_json, encode_header_json
from tests.tgsp.conftest import Packager, layout_of

SEED = 20251218
MUTATIONS = 10_000
HEADER_MUTATIONS = 1_000
FILES = {
    "adapter/adapter_model.safetensors": random.Random(SEED).randbytes(3 * 1024 + 77),
    "adapter/adapter_config.json": b'{"r": 8, "lora_alpha": 16}',
    "README.md": b"release notes\n",
}

Mutator = Callable[[random.Random, bytes, int], tuple[str, bytes]]


def _position(rng: random.Random, data: bytes, focus: int) -> int:
    """Half the positions fall in the signed prefix (preamble, header, signature)."""
    return rng.randrange(focus) if rng.random() < 0.5 else rng.randrange(len(data))


def bit_flip(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    out = bytearray(data)
    out[position] ^= 1 << rng.randrange(8)
    return f"bit_flip@{position}", bytes(out)


def byte_set(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    out = bytearray(data)
    out[position] = (out[position] + rng.randrange(1, 256)) % 256
    return f"byte_set@{position}", bytes(out)


def overwrite(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    run = rng.randbytes(rng.randrange(2, 65))
    return f"overwrite@{position}+{len(run)}", data[:position] + run + data[position + len(run) :]


def zero_range(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    length = rng.randrange(1, 129)
    end = min(len(data), position + length)
    return f"zero@{position}+{length}", data[:position] + bytes(end - position) + data[end:]


def insert(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    extra = rng.randbytes(rng.randrange(1, 65))
    return f"insert@{position}+{len(extra)}", data[:position] + extra + data[position:]


def delete(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    length = rng.randrange(1, 65)
    return f"delete@{position}+{length}", data[:position] + data[position + length :]


def truncate(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    return f"truncate@{position}", data[:position]


def append(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    del focus
    return "append", data + rng.randbytes(rng.randrange(1, 65))


def duplicate(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    position = _position(rng, data, focus)
    piece = data[position : position + rng.randrange(1, 1041)]
    return f"duplicate@{position}+{len(piece)}", data[:position] + piece + data[position:]


def swap(rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
    """Swap two equal-length ranges (a chunk-sized length reorders payload chunks)."""
    del focus
    length = rng.choice([1, 2, 16, 64, 1040, rng.randrange(1, 1041)])
    if len(data) < 2 * length:
        length = len(data) // 2
    first = rng.randrange(len(data) - 2 * length + 1)
    second = rng.randrange(first + length, len(data) - length + 1)
    out = bytearray(data)
    out[first : first + length], out[second : second + length] = (
        data[second : second + length],
        data[first : first + length],
    )
    return f"swap@{first},{second}+{length}", bytes(out)


@dataclass
class Splice:
    """Replace a range with the bytes at the same offset of another genuine package."""

    donor: bytes

    def __call__(self, rng: random.Random, data: bytes, focus: int) -> tuple[str, bytes]:
        position = _position(rng, data, focus) % min(len(data), len(self.donor))
        length = rng.choice([16, 64, 1040, rng.randrange(1, 4097)])
        end = min(position + length, len(self.donor), len(data))
        return f"splice@{position}+{end - position}", (
            data[:position] + self.donor[position:end] + data[end:]
        )


@dataclass
class Outcomes:
    """What the corpus did: refusals by error type, acceptances, unexpected exceptions."""

    refused: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def run(self, label: str, action: Callable[[], object]) -> bool:
        """Run ``action``; True if it returned (accepted), recording how it ended."""
        try:
            action()
        except TGSPError as exc:
            self.refused[type(exc).__name__] += 1
            return False
        except Exception as exc:  # the point: anything else is a bug
            self.unexpected.append(f"{label}: {type(exc).__name__}: {exc}")
            return False
        return True


@dataclass
class Target:
    package: bytes
    recipient: XWingPrivateKey
    trust_store: TrustStore
    root: Path
    counter: int = 0

    def write(self, data: bytes) -> Path:
        """A fresh file per mutation (rewriting one file in place is slow on ext4)."""
        self.counter += 1
        path = self.root / f"m{self.counter}.tgsp"
        path.write_bytes(data)
        return path

    def verify(self, path: Path) -> None:
        verify_package(path, self.trust_store)

    def open(self, path: Path) -> Path:
        destination = self.root / f"out{self.counter}"
        open_package(path, destination, recipient_key=self.recipient, trust_store=self.trust_store)
        return destination


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> Target:
    root = tmp_path_factory.mktemp("corpus")
    packager = Packager(root / "build", producer, recipients)
    (root / "build").mkdir()
    package = packager.build(FILES, recipients=recipients[:2]).path.read_bytes()
    return Target(package, recipients[0], trust_store, root)


def _extracted(destination: Path) -> dict[str, bytes]:
    return {
        p.relative_to(destination).as_posix(): p.read_bytes()
        for p in destination.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
def test_ten_thousand_byte_mutations_are_all_refused_with_tgsp_errors(
    target: Target, packager: Packager
) -> None:
    donor = packager.build(FILES, recipients=packager.recipients[:2]).path.read_bytes()
    mutators: list[tuple[str, Mutator]] = [
        ("bit_flip", bit_flip),
        ("byte_set", byte_set),
        ("overwrite", overwrite),
        ("zero", zero_range),
        ("insert", insert),
        ("delete", delete),
        ("truncate", truncate),
        ("append", append),
        ("duplicate", duplicate),
        ("swap", swap),
        ("splice", Splice(donor)),
    ]
    rng = random.Random(SEED)
    focus = layout_of(target.package).payload_start
    outcomes = Outcomes()
    tried = 0
    while tried < MUTATIONS:
        kind, mutator = mutators[tried % len(mutators)]
        label, mutated = mutator(rng, target.package, focus)
        if mutated == target.package:
            continue  # e.g. a swap of two equal ranges: not a mutation
        tried += 1
        outcomes.kinds[kind] += 1
        path = target.write(mutated)
        if outcomes.run(f"verify {label}", lambda p=path: target.verify(p)):
            outcomes.accepted.append(f"verify {label}")
        if outcomes.run(f"open {label}", lambda p=path: target.open(p)):
            outcomes.accepted.append(f"open {label}")
        assert not (target.root / f"out{target.counter}").exists(), label
        path.unlink()
    print(f"\n{tried} mutations, kinds {dict(outcomes.kinds)}")
    print(f"refusals (verify + open): {dict(outcomes.refused.most_common())}")
    assert outcomes.accepted == []
    assert outcomes.unexpected == []
    assert sum(outcomes.refused.values()) == 2 * MUTATIONS
    assert len(outcomes.kinds) == len(mutators)
    # The corpus reaches every layer, not only the first check.
    for reached in ("PackageSignatureError", "PayloadDigestError", "PackageTruncatedError"):
        assert outcomes.refused[reached] > 0, reached


def _resign_header(
    package: bytes, header: bytes, signer: CompositeSigningKey, payload_start: int
) -> bytes:
    key_id = bytes.fromhex(signer.public_key().fingerprint())
    preamble = Preamble(key_id, len(header)).pack()
    signature = signer.sign(preamble + header, SIGNATURE_CONTEXT)
    return (preamble + header + SIGNATURE_LENGTH.pack(len(signature)) + signature) + package[
        payload_start:
    ]


def test_header_only_mutations_signed_by_the_producer_fail_closed(
    target: Target, producer: CompositeSigningKey
) -> None:
    """Validly signed but mutated headers: refused, or (if still a valid header) opened
    only when every file still matches the signed manifest, with the original bytes."""
    layout = layout_of(target.package)
    header = target.package[PREAMBLE_SIZE : PREAMBLE_SIZE + layout.header_length]
    mutators: list[Mutator] = [bit_flip, byte_set, overwrite, insert, delete, duplicate, swap]
    rng = random.Random(SEED + 1)
    outcomes = Outcomes()
    opened = 0
    tried = 0
    while tried < HEADER_MUTATIONS:
        label, mutated_header = mutators[tried % len(mutators)](rng, header, len(header))
        if mutated_header == header:
            continue
        tried += 1
        package = _resign_header(target.package, mutated_header, producer, layout.payload_start)
        path = target.write(package)
        if not outcomes.run(f"verify {label}", lambda p=path: target.verify(p)):
            continue
        # Accepted by verify: it must be canonical JSON that re-encodes to the same bytes.
        assert encode_header_json(decode_header_json(mutated_header)) == mutated_header, label
        if outcomes.run(f"open {label}", lambda p=path: target.open(p)):
            # A producer may sign other names or metadata, never other content: the
            # files are the original bytes under the signed manifest's paths.
            opened += 1
            extracted = _extracted(target.root / f"out{target.counter}")
            signed = decode_header_json(mutated_header)["manifest"]["files"]
            assert sorted(extracted) == sorted(entry["path"] for entry in signed), label
            assert sorted(extracted.values()) == sorted(FILES.values()), label
    print(f"\n{tried} signed header mutations; opened {opened}; {dict(outcomes.refused)}")
    assert outcomes.unexpected == []
    assert sum(outcomes.refused.values()) + opened == tried
    assert outcomes.refused["HeaderEncodingError"] + outcomes.refused["HeaderSchemaError"] > 0
