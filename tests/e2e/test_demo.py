"""`dialer demo` in one command: sandbox + service + samples, a summary, and nothing left behind."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import aio_pika
import pytest

from service.commands.samples import example, expand_legacy_batch, sample_calls
from tests.support.sandbox import REPO_ROOT

pytestmark = [pytest.mark.integration]


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return match[1]


def test_the_renewal_batch_becomes_one_call_per_recipient() -> None:
    batch = example("renewal-reminder-batch.json")

    calls = expand_legacy_batch(batch)

    assert [c["phone_number"] for c in calls] == [r["phone_number"] for r in batch["call_data"]]
    first = calls[0]
    assert first["task"] == batch["base_prompt"]
    assert first["request_data"]["name"] == batch["call_data"][0]["name"]
    assert "call_data" not in first
    assert "batch_webhook" not in first
    assert first["voice"] == batch["voice"]


def test_the_samples_are_dialed_now() -> None:
    assert all("start_time" not in body for body in sample_calls())


async def test_demo_runs_to_a_summary_and_deletes_its_broker_objects(amqp_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    process = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-m",
            "service",
            "demo",
            "--calls",
            "60",
            "--amqp-url",
            amqp_url,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    stdout = out.decode()

    assert process.returncode == 0, stdout + err.decode()
    assert "demo: limits 100 calls at once (DIALER_MAX_CONCURRENT_CALLS; default 10)" in stdout
    assert "sandbox plan enterprise, clock x600" in stdout
    published = int(_found(r"requests published\s+(\d+)", stdout))
    at_sandbox = int(_found(r"calls at the sandbox\s+(\d+)", stdout))
    assert published == at_sandbox == 60 + len(sample_calls())
    prefix = _found(r"prefix (\S+)", stdout)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(f"{prefix}.requests", passive=True)
