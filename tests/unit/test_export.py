"""`dialer schema`: JSON Schemas agree with the validators, the AsyncAPI document is whole."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from schemas.call import CallRequest
from schemas.events import EVENT_TYPES
from schemas.export import REQUESTS, asyncapi, contract_markdown, write_all
from service.commands.cli import main


def example(name: str) -> Any:
    return json.loads(resources.files("schemas").joinpath("examples", name).read_text())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    write_all(out)
    return out


def schema(generated: Path, stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((generated / "json-schema" / f"{stem}.json").read_text())
    return data


def test_one_valid_json_schema_per_message_and_event(generated: Path) -> None:
    stems = {stem for stem, *_ in REQUESTS} | {f"event.{name}" for name in EVENT_TYPES}
    files = {path.stem for path in (generated / "json-schema").glob("*.json")}
    assert files == stems
    for stem in stems:
        document = schema(generated, stem)
        jsonschema.Draft202012Validator.check_schema(document)
        assert document["$id"] == f"{stem}.json"


@pytest.mark.parametrize(
    ("stem", "body"),
    [
        ("call.create", example("send-call-full.json")),
        ("call.create", {**example("send-call-full.json"), "dialer": {"priority": 9}}),
        ("batch.create.legacy", example("renewal-reminder-batch.json")),
        (
            "batch.create.v2",
            {"global": {"task": "t"}, "call_objects": [{"phone_number": "+12125550142"}]},
        ),
        ("call.cancel", {"request_id": "req-1"}),
        ("batch.cancel", {"batch_id": "8b8e8c57-0d2b-4c43-9d4e-0f6c7a9b1e21"}),
    ],
)
def test_examples_satisfy_the_exported_schemas(generated: Path, stem: str, body: Any) -> None:
    jsonschema.validate(body, schema(generated, stem), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    "body",
    [
        {"task": "no number"},
        {"phone_number": "+12125550142", "task": "t", "colour": "red"},
        {"phone_number": "+12125550142", "task": "t", "max_duration": 721},
        {"phone_number": "+12125550142", "task": "t", "record": "yes"},
        {"phone_number": "+12125550142", "task": "t", "dialer": {"priority": 10}},
    ],
)
def test_the_call_schema_refuses_what_validation_refuses(generated: Path, body: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema(generated, "call.create"))


def test_event_schemas_accept_real_events(generated: Path) -> None:
    event = EVENT_TYPES["call.queued"](request_id="r", call_id="c")
    jsonschema.validate(
        json.loads(event.model_dump_json()),
        schema(generated, "event.call.queued"),
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_describes_every_route_and_every_ref_resolves(generated: Path) -> None:
    document = yaml.safe_load((generated / "asyncapi.yaml").read_text())
    assert document["asyncapi"].startswith("3.")
    for ref in _refs(document):
        assert _resolve(document, ref) is not None
    by_address = {
        (ch["bindings"]["amqp"].get("exchange", {}).get("name"), ch["address"]): ch
        for ch in document["channels"].values()
    }
    for key in ("call.create", "call.cancel", "batch.create", "batch.cancel"):
        assert ("dialer.requests", key) in by_address
    for name in EVENT_TYPES:
        assert ("dialer.events", name) in by_address
    assert ("dialer.dead", "#") in by_address
    queue = document["channels"]["requestsQueue"]["bindings"]["amqp"]
    assert queue["is"] == "queue"
    assert queue["queue"]["name"] == "dialer.requests"
    assert len(document["channels"]["BatchCreate"]["messages"]) == 2
    actions = {op["action"] for op in document["operations"].values()}
    assert actions == {"send", "receive"}
    properties = document["components"]["schemas"]["RequestProperties"]["properties"]
    assert {"message_id", "correlation_id", "reply_to", "type"} <= set(properties)


def test_the_prefix_renames_exchanges_and_queues() -> None:
    text = json.dumps(asyncapi("acme"))
    assert "acme.requests" in text
    assert "acme.events" in text
    assert "acme.dead" in text
    assert "dialer.requests" not in text


def test_contract_markdown_lists_routes_events_and_every_call_field() -> None:
    text = contract_markdown()
    for key in ("call.create", "call.cancel", "batch.create", "batch.cancel", *EVENT_TYPES):
        assert f"`{key}`" in text
    for name, field in CallRequest.model_fields.items():
        assert f"| `{field.alias or name}` |" in text
    assert "| `max_duration` | integer |  | Bland: `30` |" in text
    assert "| `phone_number` | string or integer | yes |" in text
    assert "| `priority` | integer |  | `5` |" in text  # DialerOptions, nested in call.create
    assert "#### `Voicemail`" in text
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.endswith("|")


def test_the_cli_writes_the_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    markdown = tmp_path / "docs" / "contract.md"
    assert main(["schema", "--out", str(tmp_path / "out"), "--markdown", str(markdown)]) == 0
    assert (tmp_path / "out" / "asyncapi.yaml").is_file()
    assert (tmp_path / "out" / "json-schema" / "call.create.json").is_file()
    assert markdown.read_text() == contract_markdown()
    assert str(markdown) in capsys.readouterr().out
