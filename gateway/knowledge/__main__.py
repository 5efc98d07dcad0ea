"""`python -m gateway.knowledge COMMAND --config CONFIG`: manage the knowledge base of `[knowledge]`.

import FILE   a JSONL or CSV file as a new version (the whole file refused on any bad line)
versions      list the versions, the current one marked
use N         search version N from now on (a rollback; a running gateway sees it at once)
search TEXT   the suggestions for TEXT today (for trying synonyms and entries out)
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError
from gateway.knowledge.base import KnowledgeBase
from gateway.knowledge.service import describe, open_knowledge


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway.knowledge", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/gateway.toml", help="the gateway's config (its [knowledge])")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("import", help="import a JSONL or CSV file as a new version").add_argument("file", type=Path)
    commands.add_parser("versions", help="list the versions")
    commands.add_parser("use", help="search version N from now on").add_argument("number", type=int)
    commands.add_parser("search", help="search as the mini program would, today").add_argument("text")
    return parser


def run(base: KnowledgeBase, args: argparse.Namespace) -> int:
    if args.command == "import":
        print(describe(base.import_file(args.file)))
    elif args.command == "versions":
        current = base.current()
        for version in base.versions():
            mark = "*" if current and version.number == current.number else " "
            print(f"{mark} {version.number:4d}  {version.imported_at}  {version.entries:6d} entries  "
                  f"({version.imported} imported from {version.source})")  # fmt: skip
    elif args.command == "use":
        try:
            print(f"current: version {base.use(args.number).number}")
        except KeyError:
            print(f"no version {args.number}", file=sys.stderr)
            return 1
    else:
        for hit in base.search(args.text, date.today(), 5):
            print(f"{hit.score:8.3f}  {hit.id}  {hit.question}  [{' '.join(hit.terms)}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base, imported = open_knowledge(load_config(args.config, check_environment=False))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        if imported is not None:
            print(f"[knowledge] entries: {describe(imported)}")
        return run(base, args)
    except GatewayError as exc:
        print(exc.message, *(f"  {field}" for field in exc.fields), sep="\n", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        base.close()


if __name__ == "__main__":
    sys.exit(main())
