"""The backend client is tested against the buffer worker's real loopback servers."""

from tests.buffer_worker.conftest import prefix, start_backend  # noqa: F401 - fixtures used here too
