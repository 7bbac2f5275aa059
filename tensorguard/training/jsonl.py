"""Read text records from JSONL files in TensorGuard's documented schema.

Each line of a file is one JSON object ``{"text": "<non-empty string>"}`` with an
optional string ``"id"`` that is unique within the file. Nothing else is accepted:
every violation raises :class:`DatasetError` naming the file, the line and the fix.
The schema is documented in ``docs/DATA.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tensorguard.training.errors import DatasetError

ALLOWED_FIELDS = frozenset({"text", "id"})


@dataclass(frozen=True)
class TextRecord:
    """One validated line of a JSONL file."""

    text: str
    record_id: str | None
    line_number: int


def read_text_records(path: Path) -> list[TextRecord]:
    """Return every record in ``path``; raise :class:`DatasetError` on any violation."""
    return parse_text_records(path, read_jsonl_bytes(path))


def read_jsonl_bytes(path: Path) -> bytes:
    """Return the bytes of ``path``, or raise :class:`DatasetError` saying why not."""
    if not path.is_file():
        raise DatasetError(
            f"{path}: file not found; create it with one JSON object per line, "
            'e.g. {"text": "..."} (see docs/DATA.md)'
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read file ({exc.strerror or exc}); check its permissions"
        ) from exc


def parse_text_records(path: Path, data: bytes) -> list[TextRecord]:
    """Parse ``data``, the content of ``path``, into validated records.

    ``path`` only names the file in error messages, so callers can hash and parse the
    very same bytes.
    """
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    if not raw_lines:
        raise DatasetError(
            f"{path}: file is empty; add at least one line such as "
            '{"text": "..."} (see docs/DATA.md)'
        )
    records: list[TextRecord] = []
    seen_ids: dict[str, int] = {}
    for line_number, raw in enumerate(raw_lines, start=1):
        record = _parse_line(path, line_number, raw)
        if record.record_id is not None:
            first = seen_ids.setdefault(record.record_id, line_number)
            if first != line_number:
                raise DatasetError(
                    f"{path}:{line_number}: id {record.record_id!r} repeats the id on line "
                    f"{first}; give every record a unique id or drop the field"
                )
        records.append(record)
    return records


def read_texts(path: Path) -> list[str]:
    """Return the ``text`` of every record in ``path``, in file order."""
    return [record.text for record in read_text_records(path)]


def _parse_line(path: Path, line_number: int, raw: bytes) -> TextRecord:
    where = f"{path}:{line_number}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "re-encode the file as UTF-8"
        ) from exc
    if not line.strip():
        raise DatasetError(f"{where}: blank line; remove it (every line must be one JSON object)")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); "
            'write exactly one JSON object per line, e.g. {"text": "..."}'
        ) from exc
    if not isinstance(value, dict):
        raise DatasetError(
            f"{where}: expected a JSON object, found {type(value).__name__}; "
            'wrap the line as {"text": "..."}'
        )
    unexpected = sorted(set(value) - ALLOWED_FIELDS)
    if unexpected:
        raise DatasetError(
            f"{where}: unexpected field(s) {', '.join(map(repr, unexpected))}; "
            'only "text" (required) and "id" (optional) are allowed'
        )
    if "text" not in value:
        raise DatasetError(f'{where}: missing "text"; add a non-empty string field "text"')
    text = value["text"]
    if not isinstance(text, str):
        raise DatasetError(
            f'{where}: "text" must be a string, found {type(text).__name__}; '
            "quote the value as a JSON string"
        )
    if not text.strip():
        raise DatasetError(f'{where}: "text" is empty; give it non-whitespace content')
    record_id = value.get("id")
    if record_id is not None and not isinstance(record_id, str):
        raise DatasetError(
            f'{where}: "id" must be a string, found {type(record_id).__name__}; '
            "quote it or drop the field"
        )
    return TextRecord(text=text, record_id=record_id, line_number=line_number)
