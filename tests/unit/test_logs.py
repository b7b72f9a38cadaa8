"""Logging: phone numbers and secrets never reach a log line."""

from __future__ import annotations

import io
import json
import logging

import structlog

from service.logs import configure_logging, mask_phone, mask_text


def test_mask_phone_keeps_country_code_and_last_four() -> None:
    assert mask_phone("+15551230142") == "+1555***0142"
    assert mask_phone("12") == "***"


def test_mask_text_masks_numbers_and_url_passwords_inside_prose() -> None:
    text = mask_text("dialing +44 20 7946 0958 via amqp://guest:hunter2@broker:5672/")
    assert "7946" not in text
    assert "0958" in text
    assert "hunter2" not in text
    assert "request 2026-11-24" in mask_text("request 2026-11-24")


def test_json_lines_mask_phones_and_secrets_in_fields_and_foreign_logs() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = structlog.get_logger("test")
    log.info("dial", phone_number="+15551230142", authorization="Bearer sk-123", request_id="r1")
    logging.getLogger("aio_pika").warning("lost +15551230142")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["phone_number"] == "+1555***0142"
    assert lines[0]["authorization"] == "******"
    assert lines[0]["request_id"] == "r1"
    assert "+15551230142" not in stream.getvalue()
    assert "sk-123" not in stream.getvalue()
    assert len(lines) == 2
