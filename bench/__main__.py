"""`python -m bench SCENARIO [options]`: one command per benchmark, JSON + PNG results.

Scenarios: connections, fanout, overload, peers, faults, storm (bench/connections.py,
bench/fanout.py, bench/overload.py, bench/peers/, bench/faults/: the outage drill,
bench/storm.py: a reconnect storm), and the
standalone scripts presence, resume, signals and documents (bench/presence.py,
bench/resume.py, bench/signals.py, bench/documents.py; their own
options, ``--out DIR`` here). ``python -m bench SCENARIO -h`` lists a scenario's options.
Results go to ``--out`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import connections, fanout, overload, storm
from bench.faults import scenario as faults
from bench.peers import scenario as peers
from bench.report import DEFAULT_OUT

SCENARIOS: dict[str, ModuleType] = {
    "connections": connections,
    "fanout": fanout,
    "overload": overload,
    "peers": peers,
    "faults": faults,
    "storm": storm,
}
# keep their own CLIs; only --out DIR is translated
SCRIPTS = ("presence", "resume", "signals", "documents")


def _script(name: str, argv: list[str]) -> None:
    """``--out DIR`` (the harness's meaning) becomes the script's ``--out DIR/NAME.json``."""
    out = DEFAULT_OUT
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--out":
            out = Path(next(args))
        elif arg.startswith("--out="):
            out = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    module = __import__(f"bench.{name}", fromlist=["main"])
    module.main([*rest, "--out", str(out / f"{name}.json")])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SCRIPTS:
        _script(argv[0], argv[1:])
        return
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, module in SCENARIOS.items():
        sp = sub.add_parser(name, help=(module.__doc__ or "").split("\n")[0])
        module.add_arguments(sp)
        sp.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    for name in SCRIPTS:
        sub.add_parser(name, help=f"bench/{name}.py (its own options)", add_help=False)
    args = ap.parse_args(argv)
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, Path]] = SCENARIOS[args.scenario].run
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
