"""Sample call requests: the shipped examples and generated calls to fictional numbers."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

# Area codes not used by the sample files, so no number is dialed twice within Bland's 10 s.
AREA_CODES = ("617", "202", "305", "503", "702", "206", "404", "512", "303", "614")
BATCH_ONLY_KEYS = ("base_prompt", "call_data", "label", "campaign_id", "test_mode", "batch_webhook")


def example(name: str) -> dict[str, Any]:
    """One of the sample requests shipped in `schemas/examples/`."""
    text = resources.files("schemas").joinpath("examples", name).read_text(encoding="utf-8")
    body: dict[str, Any] = json.loads(text)
    return body


def expand_legacy_batch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """One call.create per recipient: the prompt as `task`, the recipient's values as `request_data`."""
    shared = {k: v for k, v in batch.items() if k not in BATCH_ONLY_KEYS}
    metadata = {**(batch.get("metadata") or {}), "campaign_id": batch.get("campaign_id")}
    calls = []
    for recipient in batch["call_data"]:
        values = {k: v for k, v in recipient.items() if k != "phone_number"}
        calls.append(
            {
                **shared,
                "phone_number": recipient["phone_number"],
                "task": batch["base_prompt"],
                "request_data": values,
                "metadata": metadata,
            }
        )
    return calls


def sample_calls() -> list[dict[str, Any]]:
    """The shipped samples as call.create bodies, dialed now and without publisher webhooks."""
    full = example("send-call-full.json")
    # Scheduled for a later date and sent to a fictional host: neither suits a one-minute demo.
    for key in ("start_time", "webhook", "webhook_events"):
        full.pop(key, None)
    batch = expand_legacy_batch(example("renewal-reminder-batch.json"))
    return [full, *batch]


def generated_calls(count: int) -> list[dict[str, Any]]:
    """Calls to fictional numbers (555-0100 to 555-0199 in several area codes)."""
    if count > 100 * len(AREA_CODES):
        raise ValueError(f"at most {100 * len(AREA_CODES)} generated calls")
    return [
        {
            "phone_number": f"+1{AREA_CODES[i // 100]}55501{i % 100:02d}",
            "task": "You are calling to confirm tomorrow's delivery window. Be brief.",
            "max_duration": 2,
            "metadata": {"demo_row": i},
        }
        for i in range(count)
    ]
