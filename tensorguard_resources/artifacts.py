"""Where assets keep their files: one directory per asset and partition."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from dagster import ConfigurableResource

from tensorguard.artifact_layout import partition_dir
from tensorguard.errors import ConfigurationError
from tensorguard_resources.runtime import TensorGuardRuntime
from tensorguard_resources.settings import resolved


def local_artifact_root(base_uri: str) -> Path:
    """The absolute local directory of an artifact store's ``base_uri`` (a local path or
    ``file://`` URI); other schemes raise :class:`ConfigurationError`."""
    parsed = urlparse(base_uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else base_uri).expanduser().resolve()
    raise ConfigurationError(
        f"artifact store scheme {parsed.scheme!r} is not supported; use a local path or "
        "file:// URI on a file system shared by all workers (TG_ARTIFACT_ROOT)"
    )


class ArtifactStore(ConfigurableResource):
    """A file-system artifact store rooted at ``base_uri``.

    ``base_uri`` is a local path or a ``file://`` URI. Workers on several machines
    must all mount the same path (NFS, EFS, a CSI volume); other schemes are refused
    rather than silently written to local disk.

    ``runtime`` is the nested :class:`TensorGuardRuntime`: every step that writes
    artifacts passes the production gates before it runs.
    """

    base_uri: str
    runtime: TensorGuardRuntime

    @property
    def root(self) -> Path:
        """The absolute local root directory of the store."""
        return local_artifact_root(resolved(self.base_uri, "ArtifactStore.base_uri"))

    def asset_dir(self, asset_name: str, partition_key: str | None = None) -> Path:
        """Directory for one asset (and partition); created on demand."""
        path = partition_dir(self.root, asset_name, partition_key)
        path.mkdir(parents=True, exist_ok=True)
        return path
