"""Pure: claimed recipients as one `POST /v2/batches/create` body, and what Bland's answer means."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from service.bland.classify import classify_create
from service.bland.metadata import REQUEST_ID_KEY
from service.errors import PermanentError, UnknownOutcomeError

# A key shared by every call goes to `global` once; the rest stays in each call object.
_PER_CALL = frozenset({"phone_number", "metadata"})
DESCRIPTION_MAX = 60


def v2_batch_body(
    bodies: Sequence[Mapping[str, Any]], *, description: str, status_webhook: str | None
) -> dict[str, Any]:
    """`global` = the fields every body has alike (task or pathway_id always), call objects the rest.

    A call object's fields override `global` at Bland, so a task that differs per recipient
    (legacy placeholders filled) travels in each call object, the first one's in `global`.
    """
    if not bodies:
        raise ValueError("a batch needs at least one call")
    first = bodies[0]
    shared = {
        key: value
        for key, value in first.items()
        if key not in _PER_CALL and all(key in b and b[key] == value for b in bodies[1:])
    }
    glob = dict(shared)
    for required in ("task", "pathway_id"):
        if required in first and required not in glob:
            glob[required] = first[required]
    objects = [{k: v for k, v in b.items() if k not in shared} for b in bodies]
    body: dict[str, Any] = {
        "global": glob,
        "call_objects": objects,
        "description": description[:DESCRIPTION_MAX],
    }
    if status_webhook is not None:
        body["status_webhook"] = status_webhook
    return body


def classify_batch_create(status_code: int, payload: object) -> str:
    """Bland's batch id, or the error that says what to do next (the rules of a single call)."""
    if status_code != 200:
        classify_create(status_code, payload)  # raises for every status but 200
    data = payload.get("data") if isinstance(payload, Mapping) else None
    batch_id = data.get("batch_id") if isinstance(data, Mapping) else None
    if isinstance(batch_id, str) and batch_id:
        return batch_id
    raise UnknownOutcomeError("HTTP 200 without a batch_id")


def status_webhook_url(webhook_url: str | None) -> str | None:
    """Our batch status webhook, beside the post-call one."""
    return None if webhook_url is None else webhook_url.rstrip("/") + "/batch"


# ---------------------------------------------------------------- legacy POST /v1/batches

LEGACY_TASK_KEY = "dialer_task"  # each row's own task, filled into base_prompt by Bland
_LEGACY_PER_CALL = frozenset({"phone_number", "task", "metadata"})


def legacy_groups(bodies: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Indexes of bodies that can share one legacy batch: the same fields but the number,
    task and metadata, and no number twice (calls are matched back by number)."""
    groups: list[tuple[str, set[str], list[int]]] = []
    for index, body in enumerate(bodies):
        key = json.dumps(
            {k: v for k, v in body.items() if k not in _LEGACY_PER_CALL}, sort_keys=True
        )
        phone = str(body.get("phone_number"))
        for shared, phones, members in groups:
            if shared == key and phone not in phones:
                phones.add(phone)
                members.append(index)
                break
        else:
            groups.append((key, {phone}, [index]))
    return [members for _, _, members in groups]


def legacy_batch_body(bodies: Sequence[Mapping[str, Any]], *, label: str) -> dict[str, Any]:
    """One `POST /v1/batches` body for bodies of one legacy group."""
    first = bodies[0]
    shared = {k: v for k, v in first.items() if k not in _LEGACY_PER_CALL}
    metadata = first.get("metadata")
    if isinstance(metadata, Mapping):
        rest = {k: v for k, v in metadata.items() if k != REQUEST_ID_KEY}
        if rest:
            shared["metadata"] = rest
    return {
        **shared,
        "base_prompt": "{{" + LEGACY_TASK_KEY + "}}",
        "call_data": [
            {"phone_number": b["phone_number"], LEGACY_TASK_KEY: b.get("task", "")} for b in bodies
        ],
        "label": label[:DESCRIPTION_MAX],
    }


def classify_legacy_batch_create(status_code: int, payload: object) -> str:
    """The legacy batch id; `message` other than "success" is Bland refusing the batch."""
    if status_code != 200:
        classify_create(status_code, payload)  # raises for every status but 200
    if not isinstance(payload, Mapping):
        raise UnknownOutcomeError("HTTP 200 that is not JSON")
    batch_id = payload.get("batch_id")
    if payload.get("message") != "success":
        raise PermanentError(str(payload.get("message") or "batch refused"), http_status=200)
    if isinstance(batch_id, str) and batch_id:
        return batch_id
    raise UnknownOutcomeError("HTTP 200 without a batch_id")
