"""What the SDKs take from the Python side, generated so the two cannot drift apart:
TypeScript types (and their JSON Schema) from the msgspec schemas, fold test vectors from
``streams/state.py``. ``python -m sdk.codegen`` writes them; ``--check`` only compares."""

from __future__ import annotations

import json
from pathlib import Path

from sdk.codegen.typescript import generate, schemas
from sdk.codegen.vectors import fold_vectors

JS = Path(__file__).resolve().parent.parent / "js"


def outputs() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    return {
        JS / "src" / "generated" / "protocol.ts": generate(),
        JS / "src" / "generated" / "schema.json": _json({"$defs": schemas()}),
        JS / "test" / "vectors" / "fold.json": _json(fold_vectors()),
    }


def stale() -> list[Path]:
    """The generated files whose checked-in text is not what the code generates now."""
    return [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]


def write() -> list[Path]:
    changed = stale()
    for path, text in outputs().items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return changed


def _json(value: object) -> str:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


__all__ = ["JS", "fold_vectors", "generate", "outputs", "schemas", "stale", "write"]
