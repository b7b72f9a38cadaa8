"""`dialer sandbox` options become one SandboxConfig; bad values name the option."""

from __future__ import annotations

import argparse

import pytest

from sandbox import cli
from sandbox.config import OptionError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    config = cli.config_from_args(parse())
    assert config.plan.name == "start"
    assert config.plan.max_concurrent == 10
    assert config.api_keys == frozenset()
    assert config.allow_http_webhooks is False
    assert config.concurrency_mode == "queue"
    assert config.faults.error_5xx_share == 0
    assert config.webhook_secret is None


def test_every_kind_of_option_reaches_the_config() -> None:
    config = cli.config_from_args(
        parse(
            "--plan", "build", "--max-concurrent", "3", "--api-key", "a", "--api-key", "b",
            "--webhook-secret", "s", "--clock-speed", "60", "--seed", "7",
            "--concurrency-mode", "reject", "--share-busy", "0.5", "--min-talk-s", "1",
            "--drop-share", "0.25", "--webhook-retries", "0", "--allow-http-webhooks",
        )
    )  # fmt: skip
    assert (config.plan.name, config.plan.max_concurrent, config.plan.max_per_day) == (
        "build",
        3,
        2000,
    )
    assert config.api_keys == {"a", "b"}
    assert (config.webhook_secret, config.clock_speed, config.seed) == ("s", 60, 7)
    assert config.concurrency_mode == "reject"
    assert config.shares.busy == 0.5
    assert config.durations.min_talk_s == 1
    assert (config.faults.drop_share, config.faults.webhook_retries) == (0.25, 0)
    assert config.allow_http_webhooks is True


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--clock-speed", "0"], "--clock-speed"),
        (["--drop-share", "1.5"], "--drop-share"),
        (["--share-human", "-1"], "--share-human"),
        (["--min-talk-s", "50", "--max-talk-s", "10"], "--min-talk-s"),
        (["--latency-ms", "-5"], "--latency-ms"),
    ],
)
def test_bad_values_name_the_option(argv: list[str], named: str) -> None:
    with pytest.raises(OptionError, match=named):
        cli.config_from_args(parse(*argv))
