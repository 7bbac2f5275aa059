"""Byte ranges of resumable downloads: what the service sends for each request header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorguard.fleet.byte_ranges import (
    ByteRange,
    RangeNotSatisfiableError,
    entity_tag,
    parse_content_range,
    plan_range,
)

DIGEST = "ab" * 32
ETAG = entity_tag(DIGEST)


@given(size=st.integers(1, 10_000), data=st.data())
def test_open_and_closed_ranges_select_the_right_bytes(size: int, data: st.DataObject) -> None:
    content = bytes(i % 251 for i in range(size))
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.one_of(st.none(), st.integers(start, size + 50)))
    header = f"bytes={start}-" + ("" if end is None else str(end))
    planned = plan_range(header, ETAG, size, DIGEST)
    assert planned is not None
    expected = content[start : (size if end is None else end + 1)]
    assert content[planned.start : planned.end + 1] == expected
    assert planned.length == len(expected)
    assert parse_content_range(planned.content_range()) == planned


@given(size=st.integers(1, 10_000), start=st.integers(0, 20_000))
def test_a_start_past_the_end_is_not_satisfiable(size: int, start: int) -> None:
    if start < size:
        assert plan_range(f"bytes={start}-", None, size, DIGEST) is not None
    else:
        with pytest.raises(RangeNotSatisfiableError):
            plan_range(f"bytes={start}-", None, size, DIGEST)


def test_suffix_range() -> None:
    assert plan_range("bytes=-10", None, 100, DIGEST) == ByteRange(90, 99, 100)
    assert plan_range("bytes=-500", None, 100, DIGEST) == ByteRange(0, 99, 100)
    with pytest.raises(RangeNotSatisfiableError):
        plan_range("bytes=-0", None, 100, DIGEST)


@pytest.mark.parametrize(
    "header",
    [None, "bytes=5-2", "bytes=1-2,4-5", "items=0-", "bytes=-", "bytes=a-", "bytes = 1-"],
)
def test_other_headers_send_the_whole_package(header: str | None) -> None:
    assert plan_range(header, None, 100, DIGEST) is None


def test_if_range_must_name_the_current_package() -> None:
    assert plan_range("bytes=10-", ETAG, 100, DIGEST) == ByteRange(10, 99, 100)
    assert plan_range("bytes=10-", entity_tag("cd" * 32), 100, DIGEST) is None
    assert plan_range("bytes=10-", DIGEST, 100, DIGEST) is None  # unquoted: not the tag


@pytest.mark.parametrize(
    "value", ["bytes 5-4/10", "bytes 0-10/10", "bytes */10", "bits 0-1/2", "bytes 0-1"]
)
def test_malformed_content_range_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="Content-Range"):
        parse_content_range(value)
