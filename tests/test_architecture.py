"""The dependency rules of docs/architecture.md hold: import-linter's contracts (in
pyproject.toml) are kept, and the document names every package it governs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_document_matches_the_tree() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    doc = (ROOT / "docs/architecture.md").read_text()
    layered = set(config["root_packages"])
    assert layered == {p.parent.name for p in ROOT.glob("*/__init__.py")} - {
        "tests",
        "bench",
        "sdk",
    }
    named = set(re.findall(r"^\| [\w ]+ \| `(\w+)/` \|", doc, flags=re.M))
    assert named == layered
    # every domain package of the edge is in the domain table, and every one there exists
    domains = {p.parent.name for p in (ROOT / "app").glob("*/__init__.py")}
    listed = set(re.findall(r"`app/(\w+)/`", doc))
    assert listed == domains
