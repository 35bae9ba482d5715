"""The one definition of the shadow rates, used wherever they are shown or acted on: `cutover report`,
`cutover status`, the status page, the tenant health view (`cutover tenant show`) and the automatic
rollback.

- `failed`: either side errored or timed out, so nothing was compared. A failed read is never
  `divergent`: it is an error, not a difference in data.
- divergence rate = divergent / answered, where answered = compared − failed.
- new-side error rate = new-side errors / compared: transport errors, timeouts and 5xx of the new side,
  whichever side served the read.
"""

from __future__ import annotations

DEFINITION = (
    "divergence rate = divergent / answered (compared - failed; a read a side failed is never divergent);"
    " new-side error rate = new-side errors (transport, timeout, 5xx) / compared"
)


def divergence_rate(divergent: int, answered: int) -> float | None:
    return round(divergent / answered, 4) if answered else None


def new_error_rate(new_errors: int, compared: int) -> float | None:
    return round(new_errors / compared, 4) if compared else None
