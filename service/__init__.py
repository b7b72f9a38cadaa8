"""The bland-dialer service: ledger, dispatcher, outcomes, outbox relay, HTTP app, CLI."""
