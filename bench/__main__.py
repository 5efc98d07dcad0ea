"""`python -m bench [NAME ...]`: run the benchmarks (all by default) and rewrite docs/benchmarks.md.

Each benchmark's figures are printed as one JSON line on stdout, the last thing it prints; progress
and notes go to stderr. Only results whose checks passed are published in the doc: one that could not
run, or ran with `"ok": false` (lost tickets, say), keeps its previous section, and the exit status
is 1.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from bench import BENCHMARKS, BenchError, load
from bench.common.report import DOC, write_doc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--no-doc", action="store_true", help=f"do not rewrite {DOC.name}")
    for name in BENCHMARKS:
        load(name).add_arguments(parser)
    return parser


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Run one benchmark and print its JSON line; None if it could not run or its checks failed."""
    try:
        result = load(name).run(args)
    except BenchError as exc:
        print(f"bench: {name}: {exc}", file=sys.stderr)
        return None
    print(json.dumps(result, ensure_ascii=False), flush=True)
    if not result.get("ok", True):
        print(
            f"bench: {name}: checks failed (see its JSON); its section of {DOC.name} is kept", file=sys.stderr
        )
        return None
    return result


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C does, so every benchmark stops the processes it started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"bench: no benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            result = run_one(name, args)
            if result is not None:
                results[name] = result
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    if results and not args.no_doc:
        print(f"bench: wrote {write_doc(results)}", file=sys.stderr)
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
