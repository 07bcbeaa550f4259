"""The SDK's generated files match the Python side: its TypeScript types (and their JSON
Schema) from the msgspec schemas, its fold test vectors from ``streams/state.py``.
A change to a frame, a state type or the fold fails here until ``python -m sdk.codegen``
is run and the result committed (the node tests then fold the new vectors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sdk.codegen import JS, outputs, stale
from streams.state import fold

ROOT = Path(__file__).resolve().parent.parent


def test_generated_sdk_files_are_current() -> None:
    assert stale() == [], "run `python -m sdk.codegen` and commit what it writes"


def test_the_check_command_says_what_is_stale() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sdk.codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_frame_is_typed_and_tagged() -> None:
    ts = outputs()[JS / "src" / "generated" / "protocol.ts"]
    for frame in (
        "welcome",
        "event",
        "ack",
        "error",
        "resumed",
        "pong",
        "presence_diff",
        "editing_conflict",
        "notification",
        "permissions",
        "message",
        "resume",
        "ping",
        "presence",
        "change",
        "auth",
    ):
        assert f'  type: "{frame}";' in ts, frame
    assert "export type ServerFrame =" in ts and "export type ClientFrame =" in ts
    # a server frame carries its defaulted fields; a client frame may leave them out
    assert "  presence: UserPresence[];" in ts and "  base_version?: number | null;" in ts


def test_the_vectors_are_what_the_python_fold_makes() -> None:
    vectors = json.loads((JS / "test" / "vectors" / "fold.json").read_text())
    assert len(vectors) >= 20
    for v in vectors:
        state = v["initial"]["entities"]
        tombstones = {(k, i): n for k, i, n in v["initial"]["tombstones"]}
        for event in v["events"]:
            fold(state, tombstones, event)
        assert state == v["expected"]["entities"], v["name"]
        assert sorted([k, i, n] for (k, i), n in tombstones.items()) == v["expected"]["tombstones"]
    # the cases that matter are there: skipped duplicates, tombstones, kinds made empty
    assert any(v["expected"]["tombstones"] for v in vectors)
    assert any({} in v["expected"]["entities"].values() for v in vectors)
