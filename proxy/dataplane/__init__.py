"""The data plane: one process's request path. The edge and the raw ASGI app read a request once,
classify and route it by the tenant's cached phase, and the executor runs the plan against old
and new (fallback, mirrored writes through the buffer, the write gate of the authority switch,
SQL endpoints), counting what it did. Imports nothing from the admin API or the CLI."""
