"""``python -m sdk.demo_vendor [--check]``: the demo's copy of ``yjs``, ``y-websocket`` and
what they import (``y-protocols``, ``lib0``), as ES modules the page loads without a
bundler, from ``tests/yjs/node_modules`` (``npm ci`` there first); and the page's import
map naming them (in ``app/demo/static/index.html``, between the ``importmap`` markers).

Each bare specifier resolves as a browser bundler would (the ``browser``, then
``import``/``module``/``default`` export conditions). The licenses are copied beside.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "tests" / "yjs" / "node_modules"
TARGET = ROOT / "app" / "demo" / "static" / "vendor"
PAGE = ROOT / "app" / "demo" / "static" / "index.html"
ENTRIES = ("yjs", "y-websocket")
_IMPORT = re.compile(
    r"""(?:import|export)[^'"]*?from\s*['"]([^'"]+)['"]|import\s*['"]([^'"]+)['"]"""
)
_MAP = re.compile(r'(<script type="importmap">).*?(</script>)', re.S)


def _export(pkg: str, sub: str) -> str:
    meta = json.loads((MODULES / pkg / "package.json").read_text())
    exports = meta.get("exports")
    entry = exports.get(sub) if isinstance(exports, dict) else None
    while isinstance(entry, dict):
        entry = next(
            (entry[k] for k in ("browser", "import", "module", "default") if k in entry), None
        )
    if entry is None:
        entry = meta.get("module") or meta.get("main")
    return posixpath.normpath(str(entry))


def resolve() -> tuple[dict[str, bytes], dict[str, str]]:
    """(vendored path -> bytes, bare specifier -> URL under /demo/vendor/)."""
    files: dict[str, bytes] = {}
    imports: dict[str, str] = {}
    todo = []
    for spec in ENTRIES:
        imports[spec] = f"/demo/vendor/{spec}/{_export(spec, '.')}"
        todo.append(f"{spec}/{_export(spec, '.')}")
    while todo:
        rel = todo.pop()
        if rel in files:
            continue
        files[rel] = (MODULES / rel).read_bytes()
        for m in _IMPORT.finditer(files[rel].decode()):
            spec = m.group(1) or m.group(2)
            if spec.startswith("."):
                todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(rel), spec)))
                continue
            pkg, _, sub = spec.partition("/")
            target = f"{pkg}/{_export(pkg, './' + sub if sub else '.')}"
            imports[spec] = f"/demo/vendor/{target}"
            todo.append(target)
    for pkg in {r.split("/")[0] for r in files}:
        for name in ("LICENSE", "LICENSE.md"):
            if (MODULES / pkg / name).exists():
                files[f"{pkg}/{name}"] = (MODULES / pkg / name).read_bytes()
    return files, dict(sorted(imports.items()))


def import_map(imports: dict[str, str]) -> str:
    return "\n" + json.dumps({"imports": imports}, indent=2) + "\n"


def page_with(imports: dict[str, str]) -> str:
    page = PAGE.read_text()
    return _MAP.sub(lambda m: m.group(1) + import_map(imports) + m.group(2), page)


def checked_in() -> dict[str, bytes]:
    return {
        p.relative_to(TARGET).as_posix(): p.read_bytes()
        for p in sorted(TARGET.rglob("*"))
        if p.is_file()
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sdk.demo_vendor", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    args = parser.parse_args()
    if not (MODULES / "yjs").exists():
        print("no tests/yjs/node_modules: cd tests/yjs && npm ci", file=sys.stderr)
        return 2
    want, imports = resolve()
    have = checked_in() if TARGET.exists() else {}
    stale = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    page_stale = page_with(imports) != PAGE.read_text()
    if args.check:
        for k in stale:
            print(f"stale: app/demo/static/vendor/{k}")
        if page_stale:
            print("stale: the import map of app/demo/static/index.html")
        return 1 if stale or page_stale else 0
    for k in stale:
        path = TARGET / k
        if k in want:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(want[k])
        else:
            path.unlink()
    if page_stale:
        PAGE.write_text(page_with(imports))
    print(f"vendored {len(want)} files ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
