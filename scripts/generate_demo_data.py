"""Regenerate the shipped demo site data and base-model corpus under tensorguard/data/.

Usage:
    python scripts/generate_demo_data.py                 # rewrite tensorguard/data/
    python scripts/generate_demo_data.py --output DIR    # write elsewhere
    python scripts/generate_demo_data.py --check         # exit 1 if the shipped files differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tensorguard.training.demo_data import (
    DEMO_SEED,
    packaged_data_root,
    render_demo_data,
    write_demo_data,
)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, then write or check the demo data; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=packaged_data_root())
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            relative
            for relative, content in render_demo_data(args.seed).items()
            if not (args.output / relative).is_file()
            or (args.output / relative).read_bytes() != content
        ]
        for relative in stale:
            print(f"out of date: {args.output / relative}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_demo_data(args.output, seed=args.seed):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
