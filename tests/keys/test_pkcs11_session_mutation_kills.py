"""The shared PKCS#11 login (``_pkcs11_session``) against a real SoftHSM2 token: every
refusal word for word, and the reference count that decides when the login ends.

Written to kill mutmut's surviving mutants of ``tensorguard/keys/_pkcs11_session.py``
(#18 item 6; docs/SECURITY.md §4). The duplicate-label case needs a token store of its
own, created before the PKCS#11 module is loaded, so it runs in a child process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tensorguard.keys import KeyProviderConfigError, KeyProviderUnavailable, TokenError
from tensorguard.keys._pkcs11_session import _LOGINS, TokenSession, load_module
from tests.keys.conftest import OTHER_TOKEN
from tests.services.softhsm import SoftHSMStore, SoftHSMToken

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_module_names_the_setting_and_the_debian_package() -> None:
    with pytest.raises(KeyProviderUnavailable) as refused:
        load_module("/nonexistent/libvendor-pkcs11.so")
    assert str(refused.value) == (
        "PKCS#11 module /nonexistent/libvendor-pkcs11.so does not exist: set "
        "TG_PKCS11_MODULE to your HSM vendor's library (SoftHSM2: "
        "/usr/lib/softhsm/libsofthsm2.so from the Debian package softhsm2)"
    )


def test_a_file_that_is_no_pkcs11_library_is_refused_with_the_error_type(
    tmp_path: Path,
) -> None:
    not_a_library = tmp_path / "libfake.so"
    not_a_library.write_bytes(b"not an ELF shared object")
    with pytest.raises(KeyProviderUnavailable) as refused:
        load_module(str(not_a_library))
    assert str(refused.value) == (
        f"PKCS#11 module {not_a_library} could not be loaded or initialised (PKCS11Error); "
        "check that it is the right library for this machine and, for SoftHSM2, that "
        "SOFTHSM2_CONF points at a readable configuration"
    )
    assert refused.value.__suppress_context__


def test_an_unknown_token_label_says_how_to_list_tokens(softhsm_token: SoftHSMToken) -> None:
    with pytest.raises(KeyProviderConfigError) as refused:
        TokenSession(softhsm_token.module_path, "no-such-token", "12345678")
    assert str(refused.value) == (
        f"no PKCS#11 token labelled 'no-such-token' in module {softhsm_token.module_path}: "
        "check TG_PKCS11_TOKEN_LABEL (list tokens with `softhsm2-util --show-slots` or "
        "`pkcs11-tool --module ... --list-token-slots`)"
    )


def test_a_rejected_pin_is_named_without_the_pin(softhsm: SoftHSMStore) -> None:
    token = softhsm.token(OTHER_TOKEN)
    assert (token.module_path, token.label) not in _LOGINS
    with pytest.raises(KeyProviderConfigError) as refused:
        TokenSession(token.module_path, token.label, "00000000")
    assert str(refused.value) == (
        f"the token {OTHER_TOKEN!r} rejected the user PIN: set TG_PKCS11_PIN to the "
        "token's user PIN (repeated failures may lock the token)"
    )
    assert (token.module_path, token.label) not in _LOGINS


def test_other_login_failures_are_token_errors_with_the_pkcs11_error_type(
    softhsm_token: SoftHSMToken,
) -> None:
    # SoftHSM2 always offers one free, uninitialised token; its label is empty.
    with pytest.raises(TokenError) as refused:
        TokenSession(softhsm_token.module_path, "", "12345678")
    assert str(refused.value) == (
        "could not open a logged-in session on token '' (TokenNotRecognised)"
    )
    assert (softhsm_token.module_path, "") not in _LOGINS


_TWIN_LABELS = """
import sys
from pathlib import Path

from tensorguard.keys import KeyProviderConfigError
from tensorguard.keys._pkcs11_session import TokenSession
from tests.services.softhsm import running_softhsm

with running_softhsm(Path(sys.argv[1]), ["twin", "twin"]) as store:
    try:
        TokenSession(store.module_path, "twin", store.token("twin").user_pin)
    except KeyProviderConfigError as exc:
        print(exc)
    else:
        print("opened")
"""


def test_two_tokens_with_one_label_are_refused(tmp_path: Path, softhsm_token: SoftHSMToken) -> None:
    # The same lookup in this process first, so that tools mapping tests to the code they
    # call (mutmut's stats run) see this test reach _open_login.
    with pytest.raises(KeyProviderConfigError, match="no PKCS#11 token labelled 'twin'"):
        TokenSession(softhsm_token.module_path, "twin", softhsm_token.user_pin)
    # SoftHSM2 reads its token directory once per process: a fresh process sees both.
    child = subprocess.run(
        [sys.executable, "-c", _TWIN_LABELS, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == (
        "several PKCS#11 tokens are labelled 'twin': give each token a unique label so "
        "TG_PKCS11_TOKEN_LABEL selects exactly one"
    )


def test_handles_share_one_login_until_the_last_one_closes(softhsm: SoftHSMStore) -> None:
    token = softhsm.token(OTHER_TOKEN)
    key = (token.module_path, token.label)
    assert key not in _LOGINS
    first = TokenSession(token.module_path, token.label, token.user_pin)
    second = TokenSession(token.module_path, token.label, token.user_pin)
    third = TokenSession(token.module_path, token.label, token.user_pin)
    assert (first.module_path, first.token_label) == key
    assert repr(first) == f"TokenSession(token={OTHER_TOKEN!r}, open)"
    assert first.session is second.session is third.session
    assert _LOGINS[key].users == 3

    third.close()
    second.close()
    assert _LOGINS[key].users == 1
    with first.lock:
        assert len(first.session.generate_random(128)) == 16  # still logged in and usable

    first.close()
    first.close()  # idempotent
    assert key not in _LOGINS
    assert repr(first) == f"TokenSession(token={OTHER_TOKEN!r}, closed)"
    with pytest.raises(TokenError) as closed:
        _ = first.session
    assert str(closed.value) == f"the session on token {OTHER_TOKEN!r} is closed"
    with pytest.raises(TokenError, match="is closed"):
        _ = first.lock
    # The login really ended: a wrong PIN is now checked by the token itself.
    with pytest.raises(KeyProviderConfigError, match="rejected the user PIN"):
        TokenSession(token.module_path, token.label, "00000000")


def test_a_second_opener_with_another_pin_is_refused_and_not_counted(
    softhsm: SoftHSMStore,
) -> None:
    token = softhsm.token(OTHER_TOKEN)
    key = (token.module_path, token.label)
    with TokenSession(token.module_path, token.label, token.user_pin):
        with pytest.raises(KeyProviderConfigError) as refused:
            TokenSession(token.module_path, token.label, token.user_pin + "0")
        assert str(refused.value) == (
            f"token {OTHER_TOKEN!r} is already logged in in this process with a different "
            "PIN: every provider in one process must use the same TG_PKCS11_PIN"
        )
        assert _LOGINS[key].users == 1
    assert key not in _LOGINS
