"""``python -m sdk.demo_bundle [--check]``: copy the SDK's build into the demo app.

The demo (``app/demo/static``, served by ``wedsync dev`` at ``/demo/``) imports the SDK as
plain ES modules. ``sdk/js/dist`` is a build output (gitignored), and ``wedsync dev`` must
work on a machine with Python only (the README's two commands), so the compiled modules
(``tsc`` output, 45 KB, no source maps, no React bindings) are checked in under
``app/demo/static/sdk/`` and installed with the package. Rebuild (``cd sdk/js && npm run
build``) and run this after changing the SDK; tests/test_demo.py fails when the copy is not
what the SDK's sources build to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "sdk" / "js" / "dist"
TARGET = ROOT / "app" / "demo" / "static" / "sdk"
SKIPPED = {"react.js"}  # the demo is plain DOM
HEADER = "// Copied from sdk/js/dist by `python -m sdk.demo_bundle`: do not edit.\n"


def bundle(dist: Path = DIST) -> dict[str, str]:
    """What TARGET must hold: each compiled module (relative path -> text)."""
    out = {}
    for path in sorted(dist.rglob("*.js")):
        rel = path.relative_to(dist).as_posix()
        if rel in SKIPPED:
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith("//# sourceMappingURL=")]
        out[rel] = HEADER + "".join(kept)
    return out


def checked_in() -> dict[str, str]:
    return {p.relative_to(TARGET).as_posix(): p.read_text() for p in sorted(TARGET.rglob("*.js"))}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sdk.demo_bundle", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    args = parser.parse_args()
    if not (DIST / "index.js").exists():
        print("no sdk/js/dist: cd sdk/js && npm ci && npm run build", file=sys.stderr)
        return 2
    want, have = bundle(), checked_in()
    stale = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    if args.check:
        for rel in stale:
            print(f"stale: {TARGET / rel}")
        return 1 if stale else 0
    for rel in set(have) - set(want):
        (TARGET / rel).unlink()
    for rel in stale:
        if rel in want:
            (TARGET / rel).parent.mkdir(parents=True, exist_ok=True)
            (TARGET / rel).write_text(want[rel])
            print(f"wrote: {TARGET / rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
