"""Production key masters must be demonstrably random: hex or base64 of 32+ bytes that
do not repeat a pattern. Development keeps the length rule only."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from tensorguard.keys import FileKeyProvider
from tensorguard.keys._errors import KeyProviderProductionError
from tensorguard.keys._master import MasterSecret, master_strength_problem

PRODUCTION = {"TG_ENVIRONMENT": "production"}

WEAK = {
    "a*32 (16 bytes as hex)": "a" * 32,
    "password*4 (24 bytes as base64)": "password" * 4,
    "a*64 (32 equal bytes)": "a" * 64,
    "password*8 (a repeated pattern)": "password" * 8,
    "a sentence": "correct horse battery staple and more words",
    "s*48": "s" * 48,
}

STRONG = {
    "token_hex(32)": secrets.token_hex(32),
    "token_urlsafe(32)": secrets.token_urlsafe(32),
    "token_urlsafe(48)": secrets.token_urlsafe(48),
    "standard base64 with padding": base64.b64encode(secrets.token_bytes(32)).decode(),
    "upper-case hex": secrets.token_hex(32).upper(),
}


@pytest.mark.parametrize("value", WEAK.values(), ids=WEAK.keys())
def test_weak_production_masters_are_refused_without_echoing_them(
    tmp_path: Path, value: str
) -> None:
    assert master_strength_problem(value) is not None
    with pytest.raises(KeyProviderProductionError) as caught:
        FileKeyProvider.from_env(tmp_path / "keys", {**PRODUCTION, "TG_KEY_MASTER": value})
    message = str(caught.value)
    assert value not in message
    assert "token_hex(32)" in message
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize("value", STRONG.values(), ids=STRONG.keys())
def test_random_production_masters_are_accepted(tmp_path: Path, value: str) -> None:
    assert master_strength_problem(value) is None
    provider = FileKeyProvider.from_env(tmp_path / "keys", {**PRODUCTION, "TG_KEY_MASTER": value})
    assert provider is not None


def test_the_messages_say_why() -> None:
    assert "16 bytes (128 bits)" in (master_strength_problem("a" * 32) or "")
    assert "24 bytes" in (master_strength_problem("password" * 4) or "")
    assert "repeat" in (master_strength_problem("a" * 64) or "")
    assert "neither hex nor base64" in (master_strength_problem("x" * 40 + "!") or "")


def test_development_keeps_the_length_rule_only() -> None:
    MasterSecret.from_text("password" * 4, production=False)
