"""Dialing: the dispatcher, its admission by the limits, its decisions on failures."""
