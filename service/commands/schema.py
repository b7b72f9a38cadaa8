"""`dialer schema`: write the JSON Schemas, the AsyncAPI document and the contract in Markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.export import contract_markdown, write_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer schema [--out DIR] [--markdown FILE]`."""
    parser.add_argument(
        "--out", type=Path, help="directory for JSON Schemas and asyncapi.yaml (default generated)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the contract as Markdown here")
    parser.add_argument("--prefix", default="dialer", help="exchange and queue name prefix")


def run(args: argparse.Namespace) -> int:
    """Write the artifacts; print what was written."""
    out: Path | None = args.out if args.out or args.markdown else Path("generated")
    if out is not None:
        for path in write_all(out, args.prefix):
            print(path)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(contract_markdown(args.prefix), encoding="utf-8")
        print(args.markdown)
    return 0
