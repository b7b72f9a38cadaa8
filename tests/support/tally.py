"""The per-request tally of a fault scenario, and the table the fault suite prints.

For every published request id: how many calls the sandbox placed for it (ground truth,
`metadata.dialer_request_id`, summed over sandbox lifetimes), and which final events the bus
carried. Duplicates are request ids with more than one call; lost are published ids without
any final event. `call.unresolved` is final (the outcome is unknown, the request is settled
and never redialed): it is not lost, it is counted apart.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FINAL_EVENTS = frozenset(
    {
        "call.completed",
        "call.failed",
        "call.canceled",
        "call.unresolved",
        "call.rejected",
        "call.suppressed",
        "call.expired",
    }
)
# Final events that may settle a request Bland never got a call for.
WITHOUT_A_CALL = frozenset(FINAL_EVENTS - {"call.completed"})
COLUMNS = ("scenario", "requests", "calls", "duplicates", "lost", "unresolved", "finals", "seconds")


@dataclass
class Tally:
    """One scenario's numbers."""

    scenario: str
    requests: int
    calls: int
    duplicates: int
    lost: int
    unresolved: int
    finals: int
    seconds: float
    duplicate_ids: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    undialed_ids: list[str] = field(default_factory=list)  # no call at the sandbox
    unexplained_ids: list[str] = field(default_factory=list)  # no call, yet settled as if called
    notes: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The table columns."""
        return {name: getattr(self, name) for name in COLUMNS}

    def as_json(self) -> dict[str, Any]:
        """Everything, for the JSON report (id lists shortened)."""
        data = asdict(self)
        for name in ("duplicate_ids", "lost_ids", "undialed_ids", "unexplained_ids"):
            data[name] = getattr(self, name)[:50]
        return data

    def summary(self) -> str:
        """One line for assertion messages."""
        parts = [f"{k}={v}" for k, v in self.row().items() if k != "scenario"]
        extra = ""
        if self.lost_ids:
            extra += f"; lost e.g. {self.lost_ids[:5]}"
        if self.duplicate_ids:
            extra += f"; duplicated e.g. {self.duplicate_ids[:5]}"
        return f"{self.scenario}: {', '.join(parts)}{extra}; notes={json.dumps(self.notes, default=str)[:1500]}"


def compute(
    scenario: str,
    published: Iterable[str],
    calls_per_request: Mapping[str, int],
    finals_per_request: Mapping[str, Iterable[str]],
    *,
    seconds: float,
    notes: dict[str, Any] | None = None,
) -> Tally:
    """The tally of the published ids against the ground truth and the final events seen."""
    ids = sorted(set(published))
    finals = {rid: set(types) for rid, types in finals_per_request.items()}
    duplicate_ids = [rid for rid in ids if calls_per_request.get(rid, 0) > 1]
    lost_ids = [rid for rid in ids if not finals.get(rid)]
    unresolved = sum(1 for rid in ids if "call.unresolved" in finals.get(rid, set()))
    undialed_ids = [rid for rid in ids if calls_per_request.get(rid, 0) == 0]
    unexplained_ids = [
        rid for rid in undialed_ids if finals.get(rid) and not finals[rid] & WITHOUT_A_CALL
    ]
    notes = dict(notes or {})
    strays = sorted(set(calls_per_request) - set(ids))
    if strays:
        notes["calls_for_unpublished_ids"] = strays[:20]
    conflicting = {rid: sorted(finals[rid]) for rid in ids if len(finals.get(rid, set())) > 1}
    if conflicting:
        notes["requests_with_several_final_types"] = dict(list(conflicting.items())[:20])
    return Tally(
        scenario=scenario,
        requests=len(ids),
        calls=sum(calls_per_request.get(rid, 0) for rid in ids),
        duplicates=len(duplicate_ids),
        lost=len(lost_ids),
        unresolved=unresolved,
        finals=sum(1 for rid in ids if finals.get(rid)),
        seconds=round(seconds, 1),
        duplicate_ids=duplicate_ids,
        lost_ids=lost_ids,
        undialed_ids=undialed_ids,
        unexplained_ids=unexplained_ids,
        notes=notes,
    )


def calls_per_request(ground_truths: Iterable[Iterable[Mapping[str, Any]]]) -> Counter[str]:
    """Calls per request id over several sandbox lifetimes (each a /_sandbox/calls list)."""
    counts: Counter[str] = Counter()
    for calls in ground_truths:
        for call in calls:
            metadata = call.get("metadata") or {}
            request_id = metadata.get("dialer_request_id")
            if request_id is not None:
                counts[str(request_id)] += 1
    return counts


def render_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """A fixed-width text table of the COLUMNS."""
    data = [[str(row.get(name, "")) for name in COLUMNS] for row in rows]
    widths = [max(len(name), *(len(r[i]) for r in data)) for i, name in enumerate(COLUMNS)]
    line = "  ".join(name.ljust(widths[i]) for i, name in enumerate(COLUMNS))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in data:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(COLUMNS))]
        out.append("  ".join(cells))
    return "\n".join(out)
