"""HTTP byte ranges for resumable package downloads (RFC 9110 §14), both sides.

The server answers one range of a package (:func:`plan_range`): ``Range: bytes=N-`` or
``bytes=N-M`` (a suffix ``bytes=-K`` too), honoured only while ``If-Range`` names the
package's current entity tag, the quoted SHA-256 of the package. Several ranges, other
units or a malformed header are ignored (the whole package is sent, as RFC 9110
allows); a first byte at or past the end is :class:`RangeNotSatisfiableError` (416).
The client checks the ``Content-Range`` it gets back (:func:`parse_content_range`).
Standard library only: the edge agent uses this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tensorguard.fleet.errors import FleetError

_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")


class RangeNotSatisfiableError(FleetError):
    """The requested range starts at or past the end of the package (HTTP 416)."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive of a representation of ``total`` bytes."""

    start: int
    end: int
    total: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start + 1

    def content_range(self) -> str:
        """The ``Content-Range`` header value of this range."""
        return f"bytes {self.start}-{self.end}/{self.total}"


def entity_tag(digest: str) -> str:
    """The strong entity tag of a package: its SHA-256 hex, quoted."""
    return f'"{digest}"'


def plan_range(
    range_header: str | None, if_range: str | None, size: int, digest: str
) -> ByteRange | None:
    """The range to send for these request headers, or None to send the whole package.

    ``If-Range`` that is not the package's entity tag (it changed since the partial
    download began) sends the whole package. Raises :class:`RangeNotSatisfiableError`
    when the first requested byte is not in the package.
    """
    if range_header is None:
        return None
    if if_range is not None and if_range.strip() != entity_tag(digest):
        return None
    match = _RANGE.fullmatch(range_header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiableError("a suffix range of 0 bytes selects nothing")
        if size == 0:
            raise RangeNotSatisfiableError("the package is empty")
        return ByteRange(max(size - suffix, 0), size - 1, size)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(
            f"the range starts at byte {start} but the package has {size} bytes"
        )
    return ByteRange(start, min(end, size - 1), size)


def parse_content_range(value: str) -> ByteRange:
    """Parse a ``Content-Range: bytes S-E/T`` answer; :class:`ValueError` if malformed."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"Content-Range {value[:100]!r} is not 'bytes first-last/total'")
    start, end, total = (int(group) for group in match.groups())
    if end < start or end >= total:
        raise ValueError(f"Content-Range {value[:100]!r} is not inside its total length")
    return ByteRange(start, end, total)
