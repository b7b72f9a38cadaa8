"""JSON Schemas of every message and event, the AsyncAPI document, the contract in Markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from schemas.batch import BatchV2Request, LegacyBatchRequest
from schemas.call import CallRequest
from schemas.envelope import CancelRequest, DialerOptions, DncRequest
from schemas.events import EVENT_TYPES, Event
from schemas.recipients import BatchOptions

ASYNCAPI_VERSION = "3.0.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
AMQP_BINDING_VERSION = "0.3.0"
_MAX_LISTED = 12  # longer enums (language codes) are left to the JSON Schema


class CallCreate(CallRequest):
    """`call.create`: a `POST /v1/calls` body plus this service's optional `dialer` object."""

    dialer: DialerOptions | None = Field(
        None, description="This service's options; removed before the call goes to Bland."
    )


class BatchCreateLegacy(LegacyBatchRequest):
    """`batch.create`, legacy shape, plus the optional `dialer` object (applies to each call)."""

    dialer: BatchOptions | None = Field(None, description="This service's options.")


class BatchCreateV2(BatchV2Request):
    """`batch.create`, v2 shape, plus the optional `dialer` object (applies to each call)."""

    dialer: BatchOptions | None = Field(None, description="This service's options.")


# (file stem, routing key, model, summary) of every request the service consumes.
REQUESTS: tuple[tuple[str, str, type[BaseModel], str], ...] = (
    ("call.create", "call.create", CallCreate, "Place one call."),
    ("call.cancel", "call.cancel", CancelRequest, "Cancel a call not yet dialed (or stop it)."),
    ("batch.create.legacy", "batch.create", BatchCreateLegacy, "Batch, seed-tutorial shape."),
    ("batch.create.v2", "batch.create", BatchCreateV2, "Batch, Bland v2 shape."),
    ("batch.cancel", "batch.cancel", CancelRequest, "Cancel a batch."),
    (
        "dnc.add",
        "dnc.add",
        DncRequest,
        "Put a number on the do-not-call list (checked at dial time).",
    ),
    ("dnc.remove", "dnc.remove", DncRequest, "Take a number off the do-not-call list."),
)
REQUEST_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("message_id", "The request id and idempotency key (else a hash of kind and body)."),
    ("correlation_id", "Echoed on every event about this request."),
    ("reply_to", "A queue that also receives this request's events."),
    ("type", "The kind (call.create, ...) when the routing key does not say it."),
    ("content_type", "application/json."),
)
EVENT_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("message_id", "The event id (dedupe on it: delivery is at-least-once)."),
    ("correlation_id", "The request's correlation_id."),
    ("type", "The event type, also the routing key."),
    ("content_type", "application/json."),
    ("delivery_mode", "2 (persistent)."),
)
DEAD_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-dialer-reason", "Why the message could not be processed."),
    ("x-dialer-error", "The error, phone numbers masked."),
    ("x-dialer-request-id", "The request id."),
    ("x-dialer-routing-key", "The original routing key."),
    ("x-dialer-exchange", "The original exchange."),
)


@dataclass
class _Parts:
    """The channels, operations and messages of the AsyncAPI document being built."""

    channels: dict[str, Any] = field(default_factory=dict)
    operations: dict[str, Any] = field(default_factory=dict)
    messages: dict[str, Any] = field(default_factory=dict)


def write_all(out: Path, prefix: str = "dialer") -> list[Path]:
    """One JSON Schema per message and event under `out/json-schema/`, and `out/asyncapi.yaml`."""
    folder = out / "json-schema"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, model in _schema_models().items():
        path = folder / f"{stem}.json"
        path.write_text(json.dumps(json_schema(model, stem), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    document = out / "asyncapi.yaml"
    document.write_text(
        yaml.safe_dump(asyncapi(prefix), sort_keys=False, allow_unicode=True, width=100),
        encoding="utf-8",
    )
    return [*written, document]


def json_schema(model: type[BaseModel], stem: str) -> dict[str, Any]:
    """The input JSON Schema of one message (by alias, self-contained)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{stem}.json", **schema}


def _schema_models() -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {stem: model for stem, _, model, _ in REQUESTS}
    models.update({f"event.{name}": cls for name, cls in EVENT_TYPES.items()})
    return models


def _component_name(routing_key: str) -> str:
    return "".join(part.capitalize() for part in routing_key.replace("_", ".").split("."))


def asyncapi(prefix: str = "dialer") -> dict[str, Any]:
    """The AsyncAPI 3 document: exchanges, queues, routing keys, messages and payloads."""
    models = _schema_models()
    keyed: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in models.values()
    ]
    top, defs = models_json_schema(
        keyed, by_alias=True, ref_template="#/components/schemas/{model}"
    )
    schemas = dict(defs.get("$defs", {}))
    refs = {stem: top[(model, "validation")] for stem, model in models.items()}
    parts = _Parts()
    _add_requests(prefix, refs, parts)
    for name, cls in EVENT_TYPES.items():
        _add_event(prefix, name, cls, refs[f"event.{name}"], parts)
    _add_dead(prefix, parts)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "bland-dialer",
            "version": "1.0.0",
            "description": (
                "Call requests in on RabbitMQ, Bland AI calls out, call ids and outcomes back "
                f"on the bus. Names use the prefix `{prefix}` (a setting)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ (DIALER_AMQP_URL).",
            }
        },
        "channels": parts.channels,
        "operations": parts.operations,
        "components": {
            "messages": parts.messages,
            "schemas": {**schemas, **_property_schemas()},
        },
    }


def _exchange(name: str, kind: str = "topic") -> dict[str, Any]:
    return {"name": name, "type": kind, "durable": True, "autoDelete": False, "vhost": "/"}


def _routing_binding(exchange: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": _exchange(exchange),
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _message(name: str, title: str, payload: Any, headers: str, summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": {"$ref": f"#/components/schemas/{headers}"},
        "correlationId": {
            "description": "AMQP correlation_id property.",
            "location": "$message.header#/correlation_id",
        },
        "payload": payload,
        "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _add_requests(prefix: str, refs: dict[str, Any], parts: _Parts) -> None:
    channels, operations, messages = parts.channels, parts.operations, parts.messages
    exchange = f"{prefix}.requests"
    for stem, key, _model, summary in REQUESTS:
        message_name = _component_name(stem)
        messages[message_name] = _message(key, stem, refs[stem], "RequestProperties", summary)
        channel = _component_name(key)
        entry = channels.setdefault(
            channel,
            {
                "address": key,
                "title": f"{exchange} / {key}",
                "description": f"Publish to exchange `{exchange}` with routing key `{key}`.",
                "messages": {},
                "bindings": _routing_binding(exchange),
            },
        )
        entry["messages"][message_name] = {"$ref": f"#/components/messages/{message_name}"}
    channels["requestsQueue"] = {
        "address": exchange,
        "title": f"queue {exchange}",
        "description": (
            f"Quorum queue bound to `{exchange}` with `#`; delivery limit; dead-letters to "
            f"`{prefix}.dead`. The service consumes every request kind from it."
        ),
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": exchange,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }
    for channel, entry in list(channels.items()):
        if channel == "requestsQueue":
            continue
        operations[f"receive{channel}"] = {
            "action": "receive",
            "title": f"Request {entry['address']}",
            "summary": f"The service consumes {entry['address']} requests.",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{name}"} for name in entry["messages"]
            ],
        }
    operations["consumeRequests"] = {
        "action": "receive",
        "summary": "The service's consumers read the requests queue.",
        "channel": {"$ref": "#/channels/requestsQueue"},
    }


def _add_event(prefix: str, name: str, cls: type[Event], payload: Any, parts: _Parts) -> None:
    channels, operations, messages = parts.channels, parts.operations, parts.messages
    component = _component_name(name)
    exchange = f"{prefix}.events"
    summary = (cls.__doc__ or name).strip().splitlines()[0]
    messages[component] = _message(name, name, payload, "EventProperties", summary)
    channels[component] = {
        "address": name,
        "title": f"{exchange} / {name}",
        "description": f"Exchange `{exchange}`, routing key `{name}`: {summary}",
        "messages": {component: {"$ref": f"#/components/messages/{component}"}},
        "bindings": _routing_binding(exchange),
    }
    operations[f"emit{component}"] = {
        "action": "send",
        "summary": summary,
        "channel": {"$ref": f"#/channels/{component}"},
        "messages": [{"$ref": f"#/channels/{component}/messages/{component}"}],
    }


def _add_dead(prefix: str, parts: _Parts) -> None:
    channels, operations, messages = parts.channels, parts.operations, parts.messages
    dead = f"{prefix}.dead"
    messages["DeadLetter"] = {
        "name": "dead-letter",
        "title": "Dead letter",
        "summary": "A request that could not be processed, unchanged, with the reason in headers.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The original message body, unchanged."},
    }
    channels["dead"] = {
        "address": "#",
        "title": f"{dead} / #",
        "description": f"Exchange `{dead}` and its queue `{dead}` (bound with `#`).",
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        "bindings": _routing_binding(dead),
    }
    operations["deadLetter"] = {
        "action": "send",
        "summary": "Requests that cannot be processed go here; nothing is dropped silently.",
        "channel": {"$ref": "#/channels/dead"},
        "messages": [{"$ref": "#/channels/dead/messages/DeadLetter"}],
    }


def _property_schemas() -> dict[str, Any]:
    def obj(rows: tuple[tuple[str, str], ...], title: str, note: str) -> dict[str, Any]:
        return {
            "type": "object",
            "title": title,
            "description": note,
            "properties": {key: {"type": "string", "description": text} for key, text in rows},
        }

    amqp_note = "AMQP basic properties (not application headers)."
    return {
        "RequestProperties": obj(REQUEST_PROPERTIES, "Request properties", amqp_note),
        "EventProperties": obj(EVENT_PROPERTIES, "Event properties", amqp_note),
        "DeadLetterHeaders": obj(DEAD_HEADERS, "Dead-letter headers", "Application headers."),
    }


def contract_markdown(prefix: str = "dialer") -> str:
    """The message contract as Markdown tables (the README's contract section)."""
    lines = [
        "## Message contract",
        "",
        f"Generated by `dialer schema --markdown`. Names use the prefix `{prefix}`.",
        "",
        "| exchange / queue | type | role |",
        "|---|---|---|",
        f"| `{prefix}.requests` | topic exchange | requests; routing key = kind |",
        f"| `{prefix}.requests` | quorum queue, bound `#` | consumed by the service; "
        f"delivery limit, dead-letters to `{prefix}.dead` |",
        f"| `{prefix}.events` | topic exchange | events; routing key = event type |",
        f"| `{prefix}.dead` | topic exchange + queue, bound `#` | what could not be processed |",
        "",
        "### Requests",
        "",
        "| routing key | body | what |",
        "|---|---|---|",
        *[f"| `{key}` | `{stem}` | {summary} |" for stem, key, _, summary in REQUESTS],
        "",
        *_properties_table("Request AMQP properties", REQUEST_PROPERTIES),
        *_properties_table("Event AMQP properties", EVENT_PROPERTIES),
        *_properties_table(f"Dead-letter headers (`{prefix}.dead`)", DEAD_HEADERS),
    ]
    for stem, _key, model, summary in REQUESTS:
        lines += _fields_section(f"`{stem}` body", summary, model)
    lines += _nested_sections()
    lines += ["### Events", "", "| routing key | what |", "|---|---|"]
    lines += [f"| `{name}` | {_first_line(cls)} |" for name, cls in EVENT_TYPES.items()]
    lines += [""]
    lines += _fields_section("Fields of every event", _first_line(Event), Event)
    base = set(Event.model_fields)
    for name, cls in EVENT_TYPES.items():
        lines += _fields_section(f"`{name}`", _first_line(cls), cls, skip=base)
    return "\n".join(lines).rstrip() + "\n"


def _first_line(cls: type[BaseModel]) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _properties_table(title: str, rows: tuple[tuple[str, str], ...]) -> list[str]:
    return [
        f"#### {title}",
        "",
        "| name | meaning |",
        "|---|---|",
        *[f"| `{name}` | {text} |" for name, text in rows],
        "",
    ]


def _fields_section(
    title: str, summary: str, model: type[BaseModel], skip: set[str] | None = None
) -> list[str]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    skipped = {model.model_fields[n].alias or n for n in skip or set() if n in model.model_fields}
    return _fields_table(title, summary, schema, skipped)


def _nested_sections() -> list[str]:
    """Tables of the objects nested in request bodies (batch parts repeat the call's fields)."""
    defs: dict[str, Any] = {}
    for _stem, _key, model, _summary in REQUESTS:
        defs.update(model.model_json_schema(by_alias=True, mode="validation").get("$defs", {}))
    lines: list[str] = []
    for name in sorted(set(defs) - {"BatchGlobal", "CallObject"}):
        lines += _fields_table(f"`{name}`", defs[name].get("description", ""), defs[name], set())
    note = (
        "`BatchGlobal` and `CallObject` take the fields of the `call.create` body (without "
        "`dialer`); `global` needs `task` or `pathway_id` and no `phone_number`; each call "
        "object needs `phone_number` and may add `b_cid` (UUID v7)."
    )
    return [*lines, note, ""]


def _fields_table(title: str, summary: str, schema: dict[str, Any], skip: set[str]) -> list[str]:
    required = set(schema.get("required", []))
    rows = [
        f"| `{name}` | {_type(prop)} | {'yes' if name in required else ''} | "
        f"{_default(prop)} | {_cell(prop.get('description', ''))} |"
        for name, prop in schema.get("properties", {}).items()
        if name not in skip
    ]
    if not rows:
        return []
    return [
        f"#### {title}",
        "",
        _cell(summary),
        "",
        "| field | type | required | default | description |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        kinds = [_type(option) for option in prop["anyOf"] if option.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    if "enum" in prop or "const" in prop:
        values = prop.get("enum", [prop.get("const")])
        if len(values) > _MAX_LISTED:
            return (
                f"{prop.get('type', 'string')} (one of {len(values)} values; see the JSON Schema)"
            )
        return " / ".join(f"`{value}`" for value in values)
    kind = str(prop.get("type", "any"))
    if kind == "array":
        kind = f"array of {_type(prop.get('items', {}))}"
    elif "format" in prop:
        kind = f"{kind} ({prop['format']})"
    return kind


def _default(prop: dict[str, Any]) -> str:
    if prop.get("default") is not None:
        return f"`{json.dumps(prop['default'])}`"
    if prop.get("x-bland-default") is not None:
        return f"Bland: `{json.dumps(prop['x-bland-default'])}`"
    return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
