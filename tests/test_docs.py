"""The tables of the README and docs/ checked against the code they describe, as
tests/test_settings.py checks the settings table: commands, HTTP routes, error codes, close
codes, frames, control messages, streams and the conflicts worker's events. No servers: the
app's routes come from ``create_app`` (its lifespan, which connects, never runs here)."""

from __future__ import annotations

import argparse
import ast
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from cryptography.fernet import Fernet
from litestar import Litestar
from litestar.routes import HTTPRoute, WebSocketRoute

from app import errors
from app.factory import create_app
from config.settings import Settings
from streams.changes import ChangeRequest
from streams.definitions import STREAMS
from streams.permissions import Role, WeddingStatus
from streams.protocol import (
    Actor,
    AuthFrame,
    ClientFrame,
    Close,
    ControlMessage,
    ErrorCode,
    ServerFrame,
)
from streams.state import DEFAULTS, EntityKind, Op
from wedsync.cli import build_parser
from workers.conflicts.engine import Rules, apply_change
from workers.conflicts.outcome import Entity, View
from workers.registry import WORKERS

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


# -- reading markdown tables ---------------------------------------------------------------


def table(path: Path, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` (a whole heading line), header and
    separator rows left out."""
    lines = path.read_text().splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(cells(line))
        elif rows:
            break
    assert len(rows) > 2, f"no table under {heading!r} in {path.name}"
    return rows[2:]


def cells(line: str) -> list[str]:
    """A table row's cells (a ``\\|`` inside a cell is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables(path: Path) -> Iterator[list[str]]:
    """Every table row of a file (headers included: they never look like what is sought)."""
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            yield cells(line)


def spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def without_parentheses(text: str) -> str:
    """``text`` without what is in (possibly nested) parentheses: asides, not the list."""
    out, depth = [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


# -- the README's command table against `wedsync`'s parser ---------------------------------


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


def usage_of(parser: argparse.ArgumentParser) -> tuple[set[str], int]:
    """A command's options (long form) and positional arguments, nested subcommands'
    included (``retention run JOB``: ``run`` and ``JOB`` are positionals)."""
    options: set[str] = set()
    positionals = 0
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                more, count = usage_of(nested)
                options |= more
                positionals = max(positionals, 1 + count)
        elif action.option_strings:
            options.add(max(action.option_strings, key=len))
        else:
            positionals += 1
    return options, positionals


def documented_usage(usage: str, parser: argparse.ArgumentParser) -> tuple[set[str], int]:
    """The options and positionals a usage line such as ``wedsync token --user ID [--name N]``
    shows (an option's value word is not a positional)."""
    words = usage.replace("[", " ").replace("]", " ").split()[2:]
    takes_value = set()
    for p in [parser, *subcommands(parser).values()]:
        for action in p._actions:
            if action.option_strings and action.nargs != 0:
                takes_value |= set(action.option_strings)
    options = {w for w in words if w.startswith("--")}
    positionals = sum(
        1
        for i, w in enumerate(words)
        if not w.startswith("--") and (i == 0 or words[i - 1] not in takes_value)
    )
    return options, positionals


def test_readme_command_table_is_the_cli() -> None:
    rows = table(README, "## Commands")
    commands = subcommands(build_parser())
    documented: dict[str, str] = {}
    for row in rows:
        usage = spans(row[0])[0]
        assert usage.startswith("wedsync "), usage
        documented[usage.split()[1]] = usage
    assert sorted(documented) == sorted(commands)
    for name, usage in documented.items():
        assert documented_usage(usage, commands[name]) == usage_of(commands[name]), usage


def test_readme_names_every_worker() -> None:
    row = next(r for r in table(README, "## Commands") if r[0] == "`wedsync worker NAME`")
    assert spans(without_parentheses(row[1])) == list(WORKERS)


# -- HTTP routes against create_app() ------------------------------------------------------

METHODS = "GET|POST|PUT|PATCH|DELETE"
ROUTE = re.compile(rf"^((?:{METHODS})(?:/(?:{METHODS}))*) (/\S*)$")


def normal(path: str) -> str:
    """``/api/weddings/{wedding_id:uuid}/events?after_seq=0`` and
    ``/api/weddings/{id}/events`` alike: ``/api/weddings/{}/events``."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0].split("[")[0])


@pytest.fixture(scope="module")
def app() -> Litestar:
    env = {
        "WEDSYNC_JWT_SECRET": "s" * 48,
        "WEDSYNC_DATA_KEY": Fernet.generate_key().decode(),
        "WEDSYNC_ADMIN_TOKEN": "a" * 32,
    }
    return create_app(Settings.from_env(env))


def served(app: Litestar) -> set[tuple[str, str]]:
    """(method, normalised path) of every HTTP operation the app serves but the schema's."""
    out: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute) and not route.path.startswith("/schema"):
            out |= {(m, normal(route.path)) for m in route.methods - {"OPTIONS", "HEAD"}}
    return out


def documented_routes() -> dict[tuple[str, str], str]:
    """(method, normalised path) of each route in a table of the README or docs/ (a row's
    first cell starts with the route: ``GET /api/...``, ``GET/PUT /api/...``)."""
    out = {}
    for path in [README, *DOCS]:
        for row in tables(path):
            first = spans(row[0])[:1] if row else []
            if first and (m := ROUTE.match(first[0])):
                for method in m.group(1).split("/"):
                    out[(method, normal(m.group(2)))] = f"{path.name}: {first[0]}"
    return out


def test_every_route_in_a_doc_table_is_served(app: Litestar) -> None:
    unknown = {where for key, where in documented_routes().items() if key not in served(app)}
    assert unknown == set()


def test_every_api_route_is_in_a_doc_table(app: Litestar) -> None:
    documented = documented_routes()
    missing = {k for k in served(app) if k[1].startswith("/api/") and k not in documented}
    assert missing == set()


def test_the_other_routes_are_documented(app: Litestar) -> None:
    """Probes, /metrics and the socket are described in prose (runtime.md, protocol.md...)."""
    text = "\n".join(p.read_text() for p in [README, *DOCS])
    mentioned = {(m, normal(p)) for m, p in re.findall(rf"`({METHODS}) (/[^` ]*)", text)}
    others = {k for k in served(app) if not k[1].startswith("/api/")}
    sockets = {("GET", normal(r.path)) for r in app.routes if isinstance(r, WebSocketRoute)}
    assert others and sockets
    assert (others | sockets) - mentioned == set()


async def test_the_api_reference_page_needs_no_cdn(app: Litestar) -> None:
    """``/schema`` works offline: every script it loads comes from the API itself."""
    # httpx types an ASGI app with plain mappings, Litestar its scopes and events as
    # TypedDicts: the same protocol, which mypy cannot see through (parameters are contravariant)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://wedsync") as c:
        page = await c.get("/schema")
        assert page.status_code == 200
        loaded = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
        assert loaded, page.text
        for url in loaded:
            assert url.startswith("/schema/"), url  # nothing from another origin
            asset = await c.get(url)
            assert asset.status_code == 200, url
            assert "javascript" in asset.headers["content-type"]
            assert b"Redoc" in asset.content
        document = await c.get("/schema/openapi.json")
        assert document.status_code == 200
        assert document.json()["info"]["title"] == "WedSync realtime"


# -- error codes ---------------------------------------------------------------------------


def application_errors() -> set[tuple[int, str]]:
    out, todo = set(), [errors.ApplicationError]
    while todo:
        cls = todo.pop()
        out.add((cls.status, cls.code))
        todo += cls.__subclasses__()
    return out


def test_http_error_table_is_the_taxonomy() -> None:
    rows = table(ROOT / "docs/api.md", "## Errors")
    documented = {(int(row[0]), spans(row[1])[0]) for row in rows}
    assert documented == application_errors() | set(errors._HTTP_CODES.items())


def literal_calls(
    name: str,
    *,
    arg: int | None = None,
    keyword: str | None = None,
    roots: tuple[str, ...] = ("app", "streams", "workers"),
) -> set[str]:
    """String literals passed to calls of ``name`` (a function or a method of that name) in
    the code under ``roots``: positional ``arg`` or ``keyword``."""
    found: set[str] = set()
    for root in roots:
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                called = node.func
                if (
                    called.id if isinstance(called, ast.Name) else getattr(called, "attr", None)
                ) != name:
                    continue
                values = [k.value for k in node.keywords if k.arg == keyword]
                if arg is not None and len(node.args) > arg:
                    values.append(node.args[arg])
                # those parameters are typed str (and mypy-checked): no other literal passes
                found |= {
                    v.value
                    for v in values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                }
    return found


def members_named(enum: str, roots: tuple[str, ...] = ("app", "streams", "workers")) -> set[str]:
    """The members of ``enum`` the code under ``roots`` names (``ErrorCode.INVALID``)."""
    found: set[str] = set()
    for root in roots:
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == enum
                ):
                    found.add(node.attr)
    return found


def test_websocket_error_code_table_is_every_code_sent() -> None:
    # a code reaches an error frame only as an ErrorCode member: no string literal...
    literals = (
        literal_calls("ErrorFrame", keyword="code")
        | literal_calls("FrameRefused", arg=0)
        | literal_calls("refuse", arg=0)  # Connection.refuse, the change handler's helper
    )
    assert not literals
    # ...and each member is sent somewhere
    assert members_named("ErrorCode") == {c.name for c in ErrorCode}
    rows = table(ROOT / "docs/protocol.md", "## Error codes (error frames)")
    assert {spans(row[0])[0] for row in rows} == {c.value for c in ErrorCode}


def test_close_code_table_is_close() -> None:
    codes = {int(c) for c in Close}
    rows = table(ROOT / "docs/protocol.md", "## Close codes")
    assert {int(row[0]) for row in rows} == codes


def test_control_message_table_is_what_is_sent() -> None:
    """Each kind with its fields (one Struct of the ``ControlMessage`` union per kind), and
    each kind sent by the app, a worker or the runtime they share."""
    kinds = struct_fields(ControlMessage)
    called: set[str] = set()
    for root in ("app", "workers", "runtime"):
        for path in (ROOT / root).rglob("*.py"):
            called |= {
                node.func.id
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            }
    assert {m.__name__ for m in ControlMessage.__args__} <= called
    rows = table(ROOT / "docs/protocol.md", "## Across processes")
    assert {spans(row[0])[0]: set(spans(without_parentheses(row[1]))) for row in rows} == kinds


# -- frames --------------------------------------------------------------------------------


def frame_fields(span: str) -> tuple[str, set[str]]:
    """``{"type": "welcome", "session_id", "epoch"?: E, "event": {...}}``: the type and the
    top-level fields (nested objects and values left out)."""
    top, depth = [], 0
    for ch in span:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 1:
            top.append(ch)
    text = "".join(top)
    kind = re.search(r'"type": "(\w+)"', text)
    assert kind, span
    names = set(re.findall(r'(?<!: )(?<!:)"(\w+)"', text)) - {"type"}
    return kind.group(1), names


def struct_fields(union: Any) -> dict[str, set[str]]:
    members = union.__args__ if hasattr(union, "__args__") else (union,)
    return {m.__struct_config__.tag: {f.name for f in msgspec.structs.fields(m)} for m in members}


@pytest.mark.parametrize(
    ("heading", "frames"),
    [
        ("## Server → client", struct_fields(ServerFrame)),
        ("## Client → server", {**struct_fields(ClientFrame), **struct_fields(AuthFrame)}),
    ],
)
def test_frame_tables_are_the_protocol_structs(heading: str, frames: dict[str, set[str]]) -> None:
    rows = table(ROOT / "docs/protocol.md", heading)
    assert dict(frame_fields(spans(row[0])[0]) for row in rows) == frames


# -- streams -------------------------------------------------------------------------------


def test_stream_table_is_the_declared_streams() -> None:
    rows = table(ROOT / "docs/runtime.md", "## Streams")
    documented = {spans(row[0])[0]: row for row in rows}
    assert set(documented) == {s.name for s in STREAMS}
    for spec in STREAMS:
        row = documented[spec.name]
        (subject,) = spans(row[1])
        (declared,) = spec.subjects
        # `wedsync.wedding.<wedding_id>.<channel>` is what `wedsync.wedding.>` holds
        assert declared.endswith(".>") and subject.startswith(declared[:-1]), spec.name
        days = spec.max_age / 86400
        if days:
            assert row[2].startswith(f"{days:.0f} days"), spec.name
        else:
            assert row[2].startswith("no age limit"), spec.name


# -- the conflicts worker's events against the engine --------------------------------------

RULES = Rules(approval_threshold=50_000, approval_ttl=3600.0)


def change(
    kind: EntityKind,
    entity_id: str,
    op: Op,
    fields: dict[str, Any],
    base: int | None,
    role: Role = Role.COUPLE,
    user: str = "ann",
) -> ChangeRequest:
    if op is Op.CREATE:
        fields = {**DEFAULTS[kind], **fields}
    return ChangeRequest(
        client_id=f"c-{uuid.uuid4().hex[:6]}",
        wedding_id=str(uuid.uuid4()),
        actor=Actor(user_id=user, role=role),
        entity=kind,
        entity_id=entity_id,
        op=op,
        fields=fields,
        base_version=base,
        ts=1.0,
    )


def held(
    kind: EntityKind, entity_id: str, fields: dict[str, Any], version: int = 1, by: str = "sam"
) -> Entity:
    fields = {**DEFAULTS[kind], **fields}
    return Entity(
        kind,
        entity_id,
        version,
        False,
        fields,
        dict.fromkeys(fields, version),
        dict.fromkeys(fields, by),
        by,
        by,
    )


def engine_events() -> dict[str, set[str]]:
    """Event type -> the keys of its ``data``, from the engine applying one change of each
    case (``scope``, which tasks and vendors events carry as well, checked and left out)."""
    guest = held(EntityKind.GUESTS, "g", {"name": "Bob"}, version=2)
    guest.field_versions["name"] = 2  # changed by sam after version 1
    tl = EntityKind.TIMELINE
    first = held(
        tl,
        "a",
        {
            "title": "A",
            "start": "2027-06-12T10:00:00Z",
            "end": "2027-06-12T11:00:00Z",
            "location": "hall",
        },
    )
    after = held(
        tl,
        "b",
        {
            "title": "B",
            "start": "2027-06-12T11:00:00Z",
            "end": "2027-06-12T12:00:00Z",
            "depends_on": ["a"],
        },
    )
    cases = [
        (change(EntityKind.GUESTS, "n", Op.CREATE, {"name": "Ada"}, None), [], None),
        (change(EntityKind.GUESTS, "g", Op.UPDATE, {"name": "Robert"}, 1), [guest], None),
        (change(EntityKind.GUESTS, "g", Op.DELETE, {}, 2), [guest], None),
        (change(EntityKind.GUESTS, "nobody", Op.UPDATE, {"meal": "fish"}, 1), [], None),
        (
            change(EntityKind.GUESTS, "g", Op.UPDATE, {"meal": "fish"}, 2),
            [guest],
            WeddingStatus.WEDDING_DAY,
        ),
        (
            change(
                EntityKind.BUDGET,
                "v",
                Op.CREATE,
                {"category": "venue", "estimated": 900_000},
                None,
                role=Role.PLANNER,
            ),
            [],
            None,
        ),
        (change(tl, "a", Op.UPDATE, {"start": "2027-06-12T10:30:00Z"}, 1), [first, after], None),
        (
            change(
                tl,
                "c",
                Op.CREATE,
                {
                    "title": "C",
                    "start": "2027-06-12T10:15:00Z",
                    "end": "2027-06-12T10:45:00Z",
                    "location": "hall",
                },
                None,
            ),
            [first],
            None,
        ),
        (change(EntityKind.TASKS, "t", Op.CREATE, {"title": "Book florist"}, None), [], None),
    ]
    out: dict[str, set[str]] = {}
    for request, entities, status in cases:
        outcome = apply_change(request, 7, View(entities), status or WeddingStatus.PLANNING, RULES)
        for emit in outcome.events:
            keys = set(emit.data)
            if request.entity in (EntityKind.TASKS, EntityKind.VENDORS):
                assert "scope" in keys, emit
                keys.discard("scope")
            assert out.setdefault(emit.type, keys) == keys, emit.type
    return out


def documented_events() -> dict[str, tuple[set[str], list[tuple[str, str]]]]:
    """Event type -> (the data keys its row lists, the pairs listed as "`a` or `b`")."""
    out = {}
    for row in table(ROOT / "docs/conflicts.md", "## Events"):
        names = spans(row[0])
        prefix = names[0].split(".")[0]
        listed = without_parentheses(row[1]).split(" — ")[0]
        keys = {re.match(r"\w+", s).group() for s in spans(listed)}  # type: ignore[union-attr]
        either = re.findall(r"`(\w+)` or `(\w+)`", listed)
        for name in names:
            out[prefix + name if name.startswith(".") else name] = (keys, either)
    return out


def test_conflict_event_table_is_what_the_engine_emits() -> None:
    documented = documented_events()
    emitted = engine_events()
    # approval decisions are emitted by the worker around the engine (they need the store)
    assert set(documented) == set(emitted) | {
        "approval.granted",
        "approval.denied",
        "approval.expired",
    }
    for kind, keys in emitted.items():
        listed, either = documented[kind]
        for a, b in either:  # one of the two, as the row says
            listed = listed - {b} if a in keys else listed - {a}
        assert keys == listed, kind
