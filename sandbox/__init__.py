"""A Bland API simulator for tests, benchmarks, the demo and users' staging."""
