"""The proxy: one sub-package per plane, composed into a process by `runtime` and run by `server`.

    dataplane   the request path: edge, ASGI app, executor, phase cache, write gate, SQL endpoints
    control     tenant state in PostgreSQL and the rules that change it: phases, moves, barrier, rollback
    shadow      shadow reads and the divergence engine: lift, compare, analyse, record, report
    health      per-tenant time series: recorded per process, stored, read back as figures
    admin       the admin API (its own port), the status page and /metrics
    cli         the `cutover` command line
    demo        `make demo`'s data services and runner

The first four import neither `runtime`, `server`, the admin API nor the CLI (they share the phase
cache and the schema between them); `runtime` composes them; the admin API serves from `runtime`; the CLI
talks to a running proxy over the admin API's HTTP (from the rest it imports the API's page limits and
the pure fleet selector) and imports `server` and `demo` only to run them. The first rule is a test
(`tests/proxy/test_import_layering.py`).
"""
