"""The write-intent buffer: intents, their Redis Streams layout, the producer and the worker.

Never imports `proxy`: the proxy depends on this package, not the other way round. Import the modules
themselves (`buffer_worker.intent`, `buffer_worker.producer`, ...): this package imports nothing, so a
command that needs only one of them (the CLI's spool check) does not load Redis and msgspec with it.
"""
