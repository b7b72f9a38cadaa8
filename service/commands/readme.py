"""Regenerate the generated documentation from the code (`make readme`): the README's metrics
and configuration tables, and the contract in docs/contract.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from schemas.export import contract_markdown
from service.metrics import Metrics
from service.settings import settings_markdown

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONTRACT = ROOT / "docs" / "contract.md"


def _replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> section")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def metrics_markdown() -> str:
    """The metrics table: every metric the service registers, with its labels."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        family = next(iter(metric.describe()))
        suffix = "_total" if family.type == "counter" else ""
        # prometheus_client keeps label names only on the wrapper; describe() drops them.
        labels = ", ".join(f"`{name}`" for name in getattr(metric, "_labelnames", ()))
        rows.append(
            f"| `{family.name}{suffix}` | {family.type} | {labels} | {family.documentation} |"
        )
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    """The README text with its generated sections brought up to date."""
    text = _replace(text, "metrics", metrics_markdown())
    return _replace(text, "settings", settings_markdown())


def render_contract(text: str) -> str:
    """docs/contract.md with its generated section brought up to date."""
    return _replace(text, "contract", contract_markdown())


def main() -> int:
    """Rewrite README.md and docs/contract.md in place; with --check, exit 1 when either is
    out of date."""
    stale = []
    for path, render_file in ((README, render), (CONTRACT, render_contract)):
        current = path.read_text(encoding="utf-8")
        wanted = render_file(current)
        if wanted == current:
            continue
        stale.append(path.relative_to(ROOT).as_posix())
        if "--check" not in sys.argv[1:]:
            path.write_text(wanted, encoding="utf-8")
    if stale and "--check" in sys.argv[1:]:
        print(f"{', '.join(stale)} out of date: run `make readme`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
