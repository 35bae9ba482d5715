"""The bulk half of a migration: copy a tenant's rows old → new (`backfill`), prove both sides equal
(`verify`, with `repair`), and gate the move to `complete` on that proof."""
