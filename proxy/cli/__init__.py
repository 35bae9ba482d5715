"""The `cutover` command line (`proxy.cli.main`): run the proxy, the worker and the demo, and operate
tenants through the admin API (`admin_client`, `target`). Exit codes, tables and JSON output live
in `support`. Commands import what they run when they run: `cutover --help` loads no heavy
library (tests/proxy/test_cli_imports.py)."""
