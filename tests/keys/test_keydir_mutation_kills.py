"""KeyDirectory on real files: each refusal word for word, what it lists and what it skips
(#18 item 6: the mutation run on keys/_keydir.py found these unchecked)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from tensorguard.durable import TEMP_PREFIX
from tensorguard.keys import KeyPurpose
from tensorguard.keys._errors import KeyExistsError, KeyNotFoundError, KeyProviderConfigError
from tensorguard.keys._keydir import KeyDirectory


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_repr_and_record_paths(tmp_path: Path) -> None:
    directory = KeyDirectory(str(tmp_path / "keys"))
    assert directory.path == tmp_path / "keys"
    assert repr(directory) == f"KeyDirectory({str(tmp_path / 'keys')!r})"
    assert directory.record_path("release", KeyPurpose.SIGNING) == (
        tmp_path / "keys" / "release.composite-signing.tgkey"
    )


def test_ensure_creates_missing_parents_privately(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "a" / "b" / "keys")
    directory.ensure()
    assert _mode(directory.path) == 0o700
    directory.ensure()  # an existing private directory is accepted as it is


def test_ensure_names_a_directory_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    directory = KeyDirectory(blocker / "keys")
    with pytest.raises(KeyProviderConfigError) as refused:
        directory.ensure()
    assert str(refused.value) == (
        f"cannot create key directory {blocker / 'keys'}: Not a directory; "
        "point TG_KEY_DIR at a writable location"
    )
    assert refused.value.__cause__ is None


def test_ensure_refuses_a_symbolic_link_to_a_private_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(KeyProviderConfigError) as refused:
        KeyDirectory(link).ensure()
    assert str(refused.value) == (
        f"key directory {link} is not a directory (symbolic links are refused); "
        "point TG_KEY_DIR at a real directory"
    )


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o701, 0o710])
def test_ensure_refuses_a_directory_others_can_enter(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(KeyProviderConfigError) as refused:
        KeyDirectory(path).ensure()
    assert str(refused.value) == (
        f"key directory {path} is accessible to other users (mode {mode:o}); run `chmod 700 {path}`"
    )


def test_write_checks_the_directory_again_and_writes_private_files(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    directory.ensure()
    target = directory.write("k", KeyPurpose.GENERIC, b"record", replace=False)
    assert target == directory.record_path("k", KeyPurpose.GENERIC)
    assert target.read_bytes() == b"record"
    assert _mode(target) == 0o600
    directory.path.chmod(0o755)
    with pytest.raises(KeyProviderConfigError, match="chmod 700"):
        directory.write("k2", KeyPurpose.GENERIC, b"record", replace=False)
    assert not directory.record_path("k2", KeyPurpose.GENERIC).exists()


def test_write_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    directory.write("k", KeyPurpose.KEM, b"one", replace=False)
    with pytest.raises(KeyExistsError) as refused:
        directory.write("k", KeyPurpose.KEM, b"two", replace=False)
    assert str(refused.value) == (
        f"key 'k' (xwing-kem) already exists in {directory.path}; refusing to overwrite "
        "it: choose another name, or rotate (see docs/KEYS.md)"
    )
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__
    assert directory.read("k", KeyPurpose.KEM) == b"one"
    directory.write("k", KeyPurpose.KEM, b"two", replace=True)
    assert directory.read("k", KeyPurpose.KEM) == b"two"
    assert _mode(directory.record_path("k", KeyPurpose.KEM)) == 0o600


def test_require_absent_uses_the_same_refusal(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    directory.require_absent("k", KeyPurpose.GENERIC)
    directory.write("k", KeyPurpose.GENERIC, b"x", replace=False)
    with pytest.raises(KeyExistsError) as refused:
        directory.require_absent("k", KeyPurpose.GENERIC)
    assert str(refused.value) == (
        f"key 'k' (generic-secret) already exists in {directory.path}; refusing to "
        "overwrite it: choose another name, or rotate (see docs/KEYS.md)"
    )
    directory.require_absent("k", KeyPurpose.KEM)  # another purpose is another record


def test_a_missing_record_says_how_to_create_it(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    directory.ensure()
    with pytest.raises(KeyNotFoundError) as refused:
        directory.read("release", KeyPurpose.SIGNING)
    assert str(refused.value) == (
        f"key 'release' (composite-signing) not found in {directory.path}; check the name "
        "and TG_KEY_DIR, or create it (signing and KEM keys: "
        "`tensorguard keys generate --name release`)"
    )
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__


def test_read_file_refuses_a_symbolic_link(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    real = directory.write("real", KeyPurpose.GENERIC, b"x", replace=False)
    link = directory.record_path("link", KeyPurpose.GENERIC)
    link.symlink_to(real)
    with pytest.raises(KeyProviderConfigError) as refused:
        directory.read("link", KeyPurpose.GENERIC)
    assert str(refused.value) == (
        f"cannot open key file {link}: Too many levels of symbolic links "
        "(symbolic links are refused)"
    )
    assert refused.value.__cause__ is None
    dangling = directory.record_path("dangling", KeyPurpose.GENERIC)
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(KeyProviderConfigError, match="symbolic links are refused"):
        directory.read("dangling", KeyPurpose.GENERIC)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_read_file_refuses_a_directory_and_closes_its_descriptor(tmp_path: Path) -> None:
    """A directory at a record's path is refused as such (it used to escape from
    ``os.fdopen`` as ``IsADirectoryError``, leaking the descriptor), also when listing."""
    directory = KeyDirectory(tmp_path / "keys")
    directory.ensure()
    inner = directory.record_path("inner", KeyPurpose.GENERIC)
    inner.mkdir(mode=0o700)
    before = _open_descriptors()
    for _ in range(3):
        with pytest.raises(KeyProviderConfigError) as refused:
            directory.read("inner", KeyPurpose.GENERIC)
        assert str(refused.value) == f"key file {inner} is not a regular file"
    assert _open_descriptors() == before
    with pytest.raises(KeyProviderConfigError, match="is not a regular file"):
        directory.read_file(next(directory.record_files()))


def test_read_file_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    directory.ensure()
    fifo = directory.record_path("pipe", KeyPurpose.GENERIC)
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(directory.read("pipe", KeyPurpose.GENERIC))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # unblock the reader so the suite does not hang, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
        pytest.fail("reading a FIFO record blocked until a writer appeared")
    [result] = outcome
    assert isinstance(result, KeyProviderConfigError)
    assert str(result) == f"key file {fifo} is not a regular file"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o700])
def test_read_file_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    path = directory.write("k", KeyPurpose.GENERIC, b"x", replace=False)
    path.chmod(mode)
    if mode & 0o077:
        with pytest.raises(KeyProviderConfigError) as refused:
            directory.read("k", KeyPurpose.GENERIC)
        assert str(refused.value) == (
            f"key file {path} is accessible to other users (mode {mode:o}); run `chmod 600 {path}`"
        )
    else:
        assert directory.read("k", KeyPurpose.GENERIC) == b"x"


def test_exists_means_a_regular_file(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    assert not directory.exists("k", KeyPurpose.GENERIC)
    directory.write("k", KeyPurpose.GENERIC, b"x", replace=False)
    assert directory.exists("k", KeyPurpose.GENERIC)
    assert not directory.exists("k", KeyPurpose.KEM)
    directory.record_path("d", KeyPurpose.GENERIC).mkdir()
    assert not directory.exists("d", KeyPurpose.GENERIC)


def test_record_files_lists_records_sorted_and_skips_the_rest(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    assert list(directory.record_files()) == []  # no directory yet
    for name in ("zeta", "alpha", "mid"):
        directory.write(name, KeyPurpose.GENERIC, b"x", replace=False)
    leftover = directory.path / f"{TEMP_PREFIX}0123abcd-alpha.generic-secret.tgkey"
    leftover.write_bytes(b"half written")
    (directory.path / "notes.txt").write_bytes(b"not a record")
    (directory.path / "alpha.generic-secret.tgkey.bak").write_bytes(b"not a record")
    assert [path.name for path in directory.record_files()] == [
        "alpha.generic-secret.tgkey",
        "mid.generic-secret.tgkey",
        "zeta.generic-secret.tgkey",
    ]
    blocker = tmp_path / "plain-file"
    blocker.write_bytes(b"")
    assert list(KeyDirectory(blocker).record_files()) == []
