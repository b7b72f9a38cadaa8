"""Message and event contracts: Bland call and batch bodies, the request envelope, events."""
