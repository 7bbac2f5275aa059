"""Archive path rules, applied identically when building and when opening a package.

A TGSP path is a relative POSIX path of one or more ``/``-separated components that:

* is valid Unicode in NFC form, at most :data:`MAX_PATH_BYTES` UTF-8 bytes, at most
  :data:`MAX_DEPTH` components, each at most :data:`MAX_COMPONENT_BYTES` bytes;
* has no empty, ``.`` or ``..`` component, no leading ``/``, no backslash, no NUL or
  other control character, no invisible format character (bidi overrides, zero-width
  joiners: they make names display as something else), and no ``:`` (Windows drive or
  stream syntax);
* has no component ending in a space or dot (Windows silently strips those);
* has no component that Windows maps to a device: ``CON``, ``PRN``, ``AUX``, ``NUL``,
  ``COM0``-``COM9``, ``LPT0``-``LPT9`` (also with superscript digits ¹²³), ``CONIN$``,
  ``CONOUT$``, in any case and with any extension (``NUL.txt``, ``con.tar.gz``):
  writing such a file on Windows writes to the device instead.

Across a file list, paths must be unique after Unicode case folding (so they do not
collide on case-insensitive file systems) and no path may be a directory prefix of
another (``a`` and ``a/b`` cannot both be files).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from tensorguard.tgsp._errors import CaseCollisionError, DuplicatePathError, UnsafePathError

MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 32
_DEVICE_DIGITS = "0123456789\u00b9\u00b2\u00b3"
WINDOWS_RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in _DEVICE_DIGITS}
)


def is_windows_reserved(component: str) -> bool:
    """True when Windows would treat ``component`` as a device (name before the first
    dot, trailing spaces ignored, any case)."""
    return component.split(".", 1)[0].rstrip(" ").upper() in WINDOWS_RESERVED_NAMES


def _fail(path: str, reason: str) -> UnsafePathError:
    return UnsafePathError(f"unsafe path {path[:200]!r}: {reason}")


def validate_archive_path(path: str) -> str:
    """Return ``path`` unchanged if it satisfies the TGSP path rules, else raise."""
    if not path:
        raise _fail(path, "empty path")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(path, "not valid Unicode") from exc
    if len(encoded) > MAX_PATH_BYTES:
        raise _fail(path, f"longer than {MAX_PATH_BYTES} bytes")
    if unicodedata.normalize("NFC", path) != path:
        raise _fail(path, "not in Unicode NFC form; rename the file")
    if path.startswith("/"):
        raise _fail(path, "absolute path")
    if "\\" in path:
        raise _fail(path, "backslash separator")
    if ":" in path:
        raise _fail(path, "':' (drive letter or stream syntax)")
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in path):
        raise _fail(path, "control or invisible format character (e.g. bidi override)")
    components = path.split("/")
    if len(components) > MAX_DEPTH:
        raise _fail(path, f"deeper than {MAX_DEPTH} components")
    for component in components:
        if component in ("", ".", ".."):
            raise _fail(path, f"component {component!r} is not a plain name")
        if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _fail(path, f"component longer than {MAX_COMPONENT_BYTES} bytes")
        if component[-1] in " .":
            raise _fail(path, "component ends in a space or dot")
        if is_windows_reserved(component):
            raise _fail(path, f"component {component!r} is a Windows device name")
    return path


def check_path_set(paths: Iterable[str]) -> None:
    """Raise if any two paths are equal, case-equal, or one is a directory of another."""
    seen: dict[str, str] = {}
    folded_seen: dict[str, str] = {}
    for path in paths:
        if path in seen:
            raise DuplicatePathError(f"duplicate path {path[:200]!r}")
        folded = unicodedata.normalize("NFC", path.casefold())
        if folded in folded_seen:
            raise CaseCollisionError(
                f"paths {folded_seen[folded][:200]!r} and {path[:200]!r} differ only in case"
            )
        seen[path] = path
        folded_seen[folded] = path
    directories: set[str] = set()
    for folded in folded_seen:
        parts = folded.split("/")
        directories.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    for folded, path in folded_seen.items():
        if folded in directories:
            raise DuplicatePathError(f"path {path[:200]!r} is both a file and a directory")
