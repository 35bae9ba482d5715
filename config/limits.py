"""Limits the settings model and the command line share, in a module without pydantic: `cutover --help`
shows them without building the settings model."""

CHUNK_ROWS_MIN, CHUNK_ROWS_MAX, CHUNK_ROWS_DEFAULT = 1_000, 50_000, 10_000
