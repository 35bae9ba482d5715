"""The largest `limit` of each admin list, in a module of its own: the CLI pages with them and must not
import the web framework the API's modules need (`tests/proxy/test_cli_imports.py`).

Large enough for a script, small enough that serving one page never holds the event loop (shared with
the data plane in process 0) for long (BENCHMARKS.md, admin API)."""

TENANTS_PAGE_MAX = 5000
AUDIT_PAGE_MAX = 1000
DIVERGENCES_PAGE_MAX = 500  # samples carry both bodies
DEAD_LETTERS_PAGE_MAX = 1000
COPIES_PAGE_MAX = 1000  # tenants, each with its copies
