"""structlog set-up: JSON off a terminal, console on one; phone numbers and secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

# E.164 or loosely formatted numbers of 7 to 15 digits, optionally with a leading '+'.
_PHONE_RE = re.compile(r"(?<![\w/.-])\+?\d[\d ().-]{5,18}\d(?![\w/-])")
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "api_key",
        "bland_api_key",
        "webhook_secret",
        "secret",
        "password",
        "token",
        "encrypted_key",
        "x-webhook-signature",
    }
)
_PHONE_KEYS = frozenset(
    {"phone_number", "phone", "to", "from", "to_number", "from_number", "transfer_phone_number"}
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_URL_PASSWORD_RE = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def mask_phone(value: str) -> str:
    """Keep the country code and the last four digits: `+15551230142` → `+1555***0142`."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        return "***"
    plus = "+" if value.strip().startswith("+") else ""
    return f"{plus}{digits[:4]}***{digits[-4:]}"


def mask_text(text: str) -> str:
    """Mask every phone-number-looking run and URL password inside free text."""
    text = _URL_PASSWORD_RE.sub(r"\1******@", text)
    return _PHONE_RE.sub(
        lambda m: mask_phone(m.group(0)) if _looks_like_phone(m.group(0)) else m.group(0), text
    )


def _looks_like_phone(candidate: str) -> bool:
    if _DATE_RE.match(candidate):
        return False
    digits = sum(ch.isdigit() for ch in candidate)
    return 7 <= digits <= 15


def _mask_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in _SECRET_KEYS:
        return "******"
    if isinstance(value, str):
        return mask_phone(value) if lowered in _PHONE_KEYS else mask_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_processor(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no full phone number or secret ever reaches a log line."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask_value(key, value)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging (aio-pika, httpx, uvicorn) through one renderer."""
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request line at INFO with the full URL; keep it at WARNING.
    for noisy in ("httpx", "httpcore", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # aiormq logs every failed connect at ERROR, and the caller (start-up retry, or aio-pika's
    # reconnect) logs the same attempt again: keep only the caller's line.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
