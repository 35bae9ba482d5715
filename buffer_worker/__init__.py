"""The write-intent buffer: intents, their Redis Streams layout, the producer and the worker.

Never imports `proxy`: the proxy depends on this package, not the other way round.
"""

from buffer_worker.intent import Intent, IntentDecodeError
from buffer_worker.producer import RedisIntentProducer
from buffer_worker.sink import BufferUnavailableError, IntentSink

__all__ = ["BufferUnavailableError", "Intent", "IntentDecodeError", "IntentSink", "RedisIntentProducer"]
