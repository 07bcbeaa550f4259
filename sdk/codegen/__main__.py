"""``python -m sdk.codegen [--check]``: write the generated SDK files (or only compare)."""

from __future__ import annotations

import argparse
import sys

from sdk.codegen import stale, write


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sdk.codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    args = parser.parse_args()
    changed = stale() if args.check else write()
    for path in changed:
        print(("stale: " if args.check else "wrote: ") + str(path))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
