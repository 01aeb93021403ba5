"""Benchmarks: scripts that print measured figures (`make bench` = `python -m benchmarks`).

They start their own stack on free loopback ports and are never run by the test suite.
"""
