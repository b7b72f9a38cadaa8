"""Outcomes: webhook intake, polling of overdue calls, reconciliation of unknown attempts, stops."""
