"""Child process for the SIGKILL tests: open a package or install a release, on cue.

Usage:
  ``python -m tests.crash_child open PACKAGE DESTINATION RECIPIENT_KEY TRUST_STORE``
  ``python -m tests.crash_child install AGENT_CONFIG_JSON ANNOUNCEMENT_JSON``

Prints ``ready`` once everything is imported and loaded (the parent starts its kill
timer then) and ``done <seconds>`` when the operation returned.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tensorguard.fleet.agent import EdgeAgent
from tensorguard.fleet.agent_config import parse_agent_config
from tensorguard.fleet.messages import InstallOutcome, ReleaseAnnouncement
from tensorguard.tgsp import TrustStore, open_package
from tensorguard.tgsp._keyfiles import load_recipient_private_key


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "open":
        package, destination, key_file, trust_file = (Path(a) for a in args)
        key = load_recipient_private_key(key_file)
        trust_store = TrustStore.load(trust_file)
        print("ready", flush=True)
        started = time.perf_counter()
        open_package(package, destination, recipient_key=key, trust_store=trust_store)
    elif command == "install":
        config_file, announcement_file = (Path(a) for a in args)
        agent = EdgeAgent.from_config(parse_agent_config(json.loads(config_file.read_text())))
        announcement = ReleaseAnnouncement.from_payload(announcement_file.read_bytes())
        print("ready", flush=True)
        started = time.perf_counter()
        report = agent.handle_release(announcement)
        if report is None or report.outcome is not InstallOutcome.INSTALLED:
            print(f"not installed: {report}", file=sys.stderr)
            return 1
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    print(f"done {time.perf_counter() - started:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
