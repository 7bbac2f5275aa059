"""Where the aggregator screens envelopes: one on the calling thread, several on its
screening threads, results in the envelopes' order (#18 item 6).

The mutation run on ``federation/_aggregation.py`` (after it began screening on
threads) found that no test sends exactly one envelope, so the sequential path could
pass anything to ``_screen``, and none noticed the thread pool being skipped or its
threads losing their name. The registered-keys mapping below is a plain ``dict`` that
notes which thread looked a site up; everything else is the real aggregator.
"""

from __future__ import annotations

import threading

import pytest

from tensorguard.crypto._composite import CompositeVerifyKey
from tensorguard.federation import _aggregation
from tensorguard.federation._aggregation import aggregate_updates
from tensorguard.federation._errors import QuorumNotMetError
from tests.federation.conftest import Federation


class ThreadNotingKeys(dict[str, CompositeVerifyKey]):
    """Registered site keys that record the name of each thread that reads them."""

    def __init__(self, keys: dict[str, CompositeVerifyKey]) -> None:
        super().__init__(keys)
        self.threads: list[str] = []

    def get(self, key: str, default: CompositeVerifyKey | None = None) -> CompositeVerifyKey | None:  # type: ignore[override]
        self.threads.append(threading.current_thread().name)
        return super().get(key, default)


def test_a_single_envelope_is_screened_in_full_on_the_calling_thread(fed: Federation) -> None:
    spec = fed.spec("screen-0001")
    keys = ThreadNotingKeys(fed.registered)
    envelope = fed.update("site-03", spec).envelope
    with pytest.raises(QuorumNotMetError) as raised:
        aggregate_updates([envelope], keys, spec, fed.public, min_sites=2)
    # screened, verified and summed: the quorum is what it lacks, nothing was rejected
    assert str(raised.value) == (
        "round 'screen-0001': only 1 valid site updates, quorum is 2; rejected: none. "
        "Wait for more sites or fix the rejected updates, then re-run the aggregation"
    )
    assert keys.threads == [threading.current_thread().name]


def test_several_envelopes_are_screened_on_named_threads_in_order(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_aggregation, "SCREEN_THREADS", 2)
    spec = fed.spec("screen-0002")
    keys = ThreadNotingKeys(fed.registered)
    envelopes = [fed.update(site, spec).envelope for site in ("site-04", "site-01")]
    result = aggregate_updates([*envelopes, b"garbage"], keys, spec, fed.public, min_sites=2)
    assert [update.site_id for update in result.accepted] == ["site-01", "site-04"]
    assert [(r.site_id, r.reason.value) for r in result.rejected] == [("<unreadable>", "malformed")]
    assert len(keys.threads) == 2
    assert all(name.startswith("tg-screen_") for name in keys.threads), keys.threads
