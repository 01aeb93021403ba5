"""The development launcher: Redis, tritonserver, the gateway and arq workers as local processes.

`make run` / `make up` / `make down`, the test fixtures, the benchmarks and `python -m export`
start their processes with these functions, so what they exercise is what a developer runs.
"""
