"""The broker side: connection, topology, the outbox relay (events out), dead letters, taps."""
