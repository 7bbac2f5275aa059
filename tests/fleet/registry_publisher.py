"""Child process for the crash test: publish one package, announcing each phase on stdout.

Usage: ``python -m tests.fleet.registry_publisher ROOT PACKAGE CHANNEL VERSION``.
Prints ``ready`` once imports are done (the parent starts its kill timer then) and
``published <seconds>`` when the publish returned.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tensorguard.fleet.registry import LocalRegistry


def main(argv: list[str]) -> int:
    root, package, channel, version = argv
    registry = LocalRegistry(Path(root))
    print("ready", flush=True)
    started = time.perf_counter()
    registry.publish(Path(package), channel, int(version), {"source": "crash-test"})
    print(f"published {time.perf_counter() - started:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
