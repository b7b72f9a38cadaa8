"""What every JSON body from outside must be before it is trusted: shallow, and text."""

from __future__ import annotations

import json
import re
from typing import Any

# Bland's bodies nest a few levels (dynamic_data, metadata); far deeper is an attack or a bug,
# and would exhaust the stack of whatever serialises it next.
MAX_DEPTH = 32
# A \uD800-\uDFFF escape: json.loads joins valid pairs, so one left over is lone.
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def depth(value: Any) -> int:
    """How deeply objects and arrays nest (iterative: a deep body cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def has_lone_surrogate(text: str, parsed: Any) -> bool:
    """True when the JSON `text` parsed into a string no UTF-8 can store (`\\ud800` alone)."""
    if not _SURROGATE_ESCAPE_RE.search(text):
        return False
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def load(raw: bytes) -> Any:
    """JSON from outside, or ValueError: not UTF-8 or JSON, nested too deep, or not text."""
    try:
        text = raw.decode("utf-8")
        parsed = json.loads(text)
    except RecursionError as exc:
        raise ValueError("nested too deeply to be read") from exc
    if depth(parsed) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if has_lone_surrogate(text, parsed):
        raise ValueError("holds a lone surrogate escape")
    return parsed
