"""A base for objects that hold a resource and release it with ``close()``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closeable(ABC):
    """Context-manager support for anything with an idempotent :meth:`close`."""

    @abstractmethod
    def close(self) -> None:
        """Release the resource. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
