"""`dialer sandbox`: run the Bland API simulator."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from sandbox.app import build_app
from sandbox.config import CONCURRENCY_MODES, OptionError, SandboxConfig
from sandbox.faults import FaultError, Faults, updated
from sandbox.outcomes import Durations, Shares
from sandbox.plans import PLANS, plan_with_overrides

SHARE_OPTIONS = ("human", "voicemail", "no_answer", "busy", "failed")
DURATION_OPTIONS = (
    "queue_s",
    "ring_s",
    "no_answer_ring_s",
    "min_talk_s",
    "max_talk_s",
    "voicemail_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's options."""
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="listen port (default: %(default)s)")
    parser.add_argument("--webhook-secret", help="HMAC key for X-Webhook-Signature")
    parser.add_argument(
        "--plan", choices=sorted(PLANS), default="start", help="caps preset (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key", action="append", default=[], help="an accepted key (repeat); default any"
    )
    parser.add_argument(
        "--clock-speed", type=float, default=10.0, help="simulated seconds per real second"
    )
    parser.add_argument("--seed", type=int, help="make outcomes and faults reproducible")
    parser.add_argument(
        "--allow-http-webhooks", action="store_true", help="accept http:// webhooks on any host"
    )
    parser.add_argument(
        "--strict-https-webhooks",
        action="store_true",
        help="reject http:// webhooks even on loopback hosts",
    )
    parser.add_argument(
        "--webhook-insecure-tls", action="store_true", help="skip TLS checks of https webhooks"
    )
    parser.add_argument(
        "--concurrency-mode",
        choices=CONCURRENCY_MODES,
        default="queue",
        help="at the concurrency cap: wait in queue_status queued, or 429 (default: %(default)s)",
    )
    parser.add_argument("--max-concurrent", type=int, help="override the plan (0: unlimited)")
    parser.add_argument("--max-per-hour", type=int, help="override the plan (0: unlimited)")
    parser.add_argument("--max-per-day", type=int, help="override the plan (0: unlimited)")
    parser.add_argument(
        "--same-number-window-s",
        type=float,
        default=10.0,
        help="one call per number per window, real seconds; 0 disables (default: %(default)s)",
    )
    shares = Shares()
    for name in SHARE_OPTIONS:
        flag = "--share-" + name.replace("_", "-")
        parser.add_argument(
            flag, type=float, default=getattr(shares, name), help="outcome weight (%(default)s)"
        )
    durations = Durations()
    for name in DURATION_OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=getattr(durations, name),
            help="simulated seconds (%(default)s)",
        )
    faults = Faults()
    fault = parser.add_argument_group(
        "faults",
        "what goes wrong and how often (shares are probabilities 0 to 1); "
        "also settable at run time with PUT /_sandbox/faults",
    )
    fault.add_argument(
        "--latency-ms",
        type=float,
        default=faults.latency_ms,
        help="added to every API answer, real milliseconds (default: %(default)s)",
    )
    fault.add_argument(
        "--error-5xx-share",
        type=float,
        default=faults.error_5xx_share,
        help="call creates answered 500 with nothing placed (default: %(default)s)",
    )
    fault.add_argument(
        "--rate-limit-429-share",
        type=float,
        default=faults.rate_limit_429_share,
        help="call creates answered 429 with nothing placed (default: %(default)s)",
    )
    fault.add_argument(
        "--drop-share",
        type=float,
        default=faults.drop_share,
        help="call creates placed but whose answer is lost (connection closed): "
        "an unknown outcome for the client (default: %(default)s)",
    )
    fault.add_argument(
        "--webhook-loss-share",
        type=float,
        default=faults.webhook_loss_share,
        help="post-call webhooks never sent (default: %(default)s)",
    )
    fault.add_argument(
        "--webhook-retries",
        type=int,
        default=faults.webhook_retries,
        help="resends of a webhook the receiver did not answer 2xx (default: %(default)s)",
    )
    fault.add_argument(
        "--read-error-5xx-share",
        type=float,
        default=faults.read_error_5xx_share,
        help="reads (GET /v1/calls...) answered 500 (default: %(default)s)",
    )
    fault.add_argument(
        "--webhook-delay-s",
        type=float,
        default=faults.webhook_delay_s,
        help="extra delay before each webhook, simulated seconds (default: %(default)s)",
    )
    fault.add_argument(
        "--webhook-duplicate-share",
        type=float,
        default=faults.webhook_duplicate_share,
        help="delivered webhooks sent a second time (default: %(default)s)",
    )
    parser.add_argument(
        "--webhook-retry-delay-s",
        type=float,
        default=1.0,
        help="wait before resending a failed webhook, real seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--webhook-timeout-s",
        type=float,
        default=10.0,
        help="how long a webhook receiver may take to answer, seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error", "critical"),
        help="the sandbox's log level (default: %(default)s)",
    )


def _faults(args: argparse.Namespace) -> Faults:
    knobs = {
        "latency_ms": args.latency_ms,
        "error_5xx_share": args.error_5xx_share,
        "rate_limit_429_share": args.rate_limit_429_share,
        "drop_share": args.drop_share,
        "webhook_loss_share": args.webhook_loss_share,
        "webhook_retries": args.webhook_retries,
        "read_error_5xx_share": args.read_error_5xx_share,
        "webhook_delay_s": args.webhook_delay_s,
        "webhook_duplicate_share": args.webhook_duplicate_share,
    }
    try:
        return updated(Faults(), knobs)
    except FaultError as exc:
        raise OptionError(f"--{str(exc).replace('_', '-')}") from exc


def _check(args: argparse.Namespace) -> None:
    if args.clock_speed <= 0:
        raise OptionError("--clock-speed must be positive")
    for name in SHARE_OPTIONS:
        if getattr(args, "share_" + name) < 0:
            raise OptionError(f"--share-{name.replace('_', '-')} must not be negative")
    for name in DURATION_OPTIONS:
        if getattr(args, name) < 0:
            raise OptionError(f"--{name.replace('_', '-')} must not be negative")
    if args.min_talk_s > args.max_talk_s:
        raise OptionError("--min-talk-s must not exceed --max-talk-s")


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """The configuration the options describe; OptionError names a bad option."""
    _check(args)
    return SandboxConfig(
        webhook_secret=args.webhook_secret,
        plan=plan_with_overrides(
            args.plan,
            max_concurrent=args.max_concurrent,
            max_per_hour=args.max_per_hour,
            max_per_day=args.max_per_day,
        ),
        api_keys=frozenset(args.api_key),
        clock_speed=args.clock_speed,
        seed=args.seed,
        allow_http_webhooks=args.allow_http_webhooks,
        strict_https_webhooks=args.strict_https_webhooks,
        concurrency_mode=args.concurrency_mode,
        same_number_window_s=args.same_number_window_s,
        shares=Shares(**{name: getattr(args, "share_" + name) for name in SHARE_OPTIONS}),
        durations=Durations(**{name: getattr(args, name) for name in DURATION_OPTIONS}),
        faults=_faults(args),
        webhook_retry_delay_s=args.webhook_retry_delay_s,
        webhook_timeout_s=args.webhook_timeout_s,
        webhook_verify_tls=not args.webhook_insecure_tls,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 2 for an invalid option."""
    try:
        config = config_from_args(args)
    except OptionError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    app = build_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=args.host, port=args.port, log_level=args.log_level, http="h11", lifespan="on"
        )
    )
    # The drop-connection fault closes a client's transport, found among the live connections.
    app.state.connections = server.server_state.connections
    print(f"sandbox: serving Bland's API on http://{args.host}:{args.port}", flush=True)
    server.run()
    return 0
