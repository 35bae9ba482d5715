"""`make demo` (`cutover demo`): the demo's tenant-scoped data service, run as old and as new (`backend`),
the run that walks tenants through the phases under live traffic and checks both sides agree (`runner`),
and `cutover demo --serve`, which leaves the same set-up running for the runbook (`serve`). The tests'
backends are `backend` too."""
