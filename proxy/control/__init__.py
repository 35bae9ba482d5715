"""The control plane: durable tenant state in PostgreSQL and the rules that change it. Phases
(versioned, audited, NOTIFY on commit), the one path every phase move takes and its guards, the
authority-switch barrier and process presence, automatic rollback, fleet selection, archived and
seen tenants, the dead-letter audit, and the schema that creates every table."""
