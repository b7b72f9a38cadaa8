"""Pure planning of `batch.create` and `batch.cancel`: recipients split, each validated alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.call import CallRequest, to_bland_body
from schemas.envelope import CancelRequest
from schemas.recipients import SplitBatch, split_batch
from schemas.validation import BlandValidationError, bland_messages
from service.ledger import NewBatch, NewCall, RejectedRecipient
from service.ledger.batches import recipient_request_id


@dataclass(frozen=True)
class CreateBatch:
    """Write a batch request: its recipients and the rejected ones."""

    batch: NewBatch


@dataclass(frozen=True)
class CancelBatch:
    """Cancel a batch request (by its request id or a Bland batch id)."""

    request_id: str | None
    bland_batch_id: str | None


@dataclass(frozen=True)
class BatchIds:
    """The ids of the delivery a batch request came in."""

    request_id: str
    correlation_id: str | None
    reply_to: str | None


def plan_batch(
    body: dict[str, Any], ids: BatchIds, *, replace_webhook: bool, default_dispatch: str
) -> CreateBatch | list[str]:
    """The batch to write, or the errors that reject it as a whole."""
    try:
        split = split_batch(body)
    except BlandValidationError as exc:
        return list(exc.errors)
    return CreateBatch(new_batch(split, ids, replace_webhook, default_dispatch))


def new_batch(
    split: SplitBatch, ids: BatchIds, replace_webhook: bool, default_dispatch: str
) -> NewBatch:
    """The ledger's record of a split batch: one request id per recipient, from its index."""
    dispatch = split.options.dispatch or default_dispatch
    options = split.options.call_options()
    calls: list[NewCall] = []
    rejected: list[RejectedRecipient] = []
    for recipient in split.recipients:
        rid = recipient_request_id(ids.request_id, recipient.index)
        if recipient.call is None:
            rejected.append(RejectedRecipient(rid, recipient.index, recipient.phone_number, recipient.errors))  # fmt: skip
            continue
        body, webhook = _bland_body(recipient.call, replace_webhook)
        calls.append(
            NewCall(
                request_id=rid,
                correlation_id=ids.correlation_id,
                reply_to=ids.reply_to,
                phone_number=recipient.call.phone_number,
                body=body,
                options=options,
                publisher_webhook=webhook,
                batch_request_id=ids.request_id,
                recipient_index=recipient.index,
                dispatch="bland" if dispatch == "bland" else None,
            )
        )
    return NewBatch(
        batch_request_id=ids.request_id,
        correlation_id=ids.correlation_id,
        reply_to=ids.reply_to,
        shape=split.shape,
        dispatch=dispatch,
        test_mode=split.test_mode,
        calls=calls,
        rejected=rejected,
    )


def _bland_body(call: CallRequest, replace_webhook: bool) -> tuple[dict[str, Any], str | None]:
    body = to_bland_body(call)
    # The webhook rule of call.create (docs/internals.md): ours replaces the publisher's.
    webhook = body.pop("webhook", None) if replace_webhook else None
    return body, webhook


def plan_batch_cancel(body: dict[str, Any]) -> CancelBatch | list[str]:
    """The batch to cancel, or why the request is invalid."""
    try:
        request = CancelRequest.model_validate(body)
    except ValidationError as exc:
        return bland_messages(exc)
    if request.call_id is not None:
        return ["call_id cancels a call: publish it as call.cancel."]
    return CancelBatch(request.request_id, request.batch_id)
