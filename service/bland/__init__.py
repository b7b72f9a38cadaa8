"""Bland's HTTP API: the client, the classification of its answers, our metadata in its calls."""
