"""The arq worker: `python -m worker.main`. Imports nothing of the web layer (aiohttp, gateway.app,
gateway.routes, gateway.errors): tests/test_layering.py checks it."""
