"""Evaluate every dashboard query and every alert's inputs on a live Prometheus.

Usage: prometheus_queries.py PROMETHEUS_URL ALERTS DASHBOARD

Prints one line per query and exits 1 when any returns no series: a panel or an alert that
can never show data. Dashboard queries are evaluated as they are (Grafana's variables
replaced). An alert's expression returns nothing while all is well, so for each alert this
evaluates, instead of the expression:
  - each operand of its top-level `and` / `or` / `unless`, without its final comparison with a
    number (`x > 0` -> `x`), and
  - each series selector in it (`dialer_backlog{state="unresolved"}`),
so an alert is reported when one of its inputs does not exist.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$namespace": ".*",
}
SET_OPERATORS = ("and", "or", "unless")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
NUMBER = re.compile(r"\s*(bool\s+)?[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
MODIFIER = re.compile(r"^\s*(on|ignoring)\s*\([^)]*\)\s*(group_left|group_right)?\s*(\([^)]*\))?")
SELECTOR = re.compile(r"\b((?:dialer_[a-z0-9_]+)|up)\b\s*(\{[^}]*\})?")


def top_level(expr: str) -> list[tuple[int, str]]:
    """(index, character) of every character outside brackets and string literals."""
    depth, quote, out = 0, "", []
    for i, char in enumerate(expr):
        if quote:
            quote = "" if char == quote and expr[i - 1] != "\\" else quote
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            out.append((i, char))
    return out


def operands(expr: str) -> list[str]:
    """The operands of the top-level set operators, modifiers (`on (...)`) dropped."""
    outside = {i for i, _ in top_level(expr)}
    text = "".join(c if i in outside else "\0" for i, c in enumerate(expr))
    cuts = [m for op in SET_OPERATORS for m in re.finditer(rf"(?<!\w){op}(?!\w)", text)]
    parts, start = [], 0
    for match in sorted(cuts, key=lambda m: m.start()):
        parts.append(expr[start : match.start()])
        start = match.end()
    parts.append(expr[start:])
    return [MODIFIER.sub("", part).strip() for part in parts]


def without_threshold(expr: str) -> str:
    """`x > 0` -> `x`: the last top-level comparison with a number, removed."""
    positions = top_level(expr)
    for index, _ in reversed(positions):
        for op in COMPARISONS:
            if expr.startswith(op, index) and NUMBER.fullmatch(expr[index + len(op) :]):
                return expr[:index].strip()
    return expr.strip()


def alert_probes(expr: str) -> list[str]:
    """What must return series for the alert to be able to fire."""
    probes = [without_threshold(part) for part in operands(expr)]
    probes += ["".join(m.groups("")) for m in SELECTOR.finditer(expr)]
    return list(dict.fromkeys(probes))


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, query) of every target, Grafana's variables replaced."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    return queries


def series_count(prometheus: str, query: str) -> int:
    """How many series an instant query returns now."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own URL
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{query}: {body.get('error')}")
    return len(body["data"]["result"])


def main(argv: list[str]) -> int:
    """Evaluate everything; print the empty queries; 1 when there is any."""
    prometheus, alerts, dashboard = argv[1].rstrip("/"), Path(argv[2]), Path(argv[3])
    checks = [
        (f"panel '{title}'", query)
        for title, query in dashboard_queries(json.loads(dashboard.read_text()))
    ]
    for group in yaml.safe_load(alerts.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            checks += [(f"alert {name}", probe) for probe in alert_probes(str(rule["expr"]))]
    empty = 0
    for what, query in checks:
        count = series_count(prometheus, query)
        empty += count == 0
        print(f"{'ok   ' if count else 'EMPTY'} {count:3d}  {what}: {' '.join(query.split())}")
    print(f"{len(checks) - empty} of {len(checks)} queries return series; {empty} return none")
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
