"""The proxy: the ASGI data plane, upstream clients, shadow compare, phase cache, admin API and CLI."""
