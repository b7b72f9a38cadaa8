"""The `dialer` command line: one module per command."""
