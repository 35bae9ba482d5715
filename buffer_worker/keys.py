"""Redis key layout. Every key of one partition shares the hash tag `{p<N>}` so that a Redis Cluster keeps
a partition (its stream, pending counters and lease) on one node, so a MULTI or a script over them stays
legal."""

from __future__ import annotations

import zlib

CONSUMER_GROUP = b"cutover-workers"


def partition_of(tenant: str, partitions: int) -> int:
    # crc32, not hash(): Python's str hash is salted per process, and every proxy and worker must agree.
    return zlib.crc32(tenant.encode()) % partitions


def stream_key(prefix: str, partition: int) -> str:
    return f"{prefix}:{{p{partition}}}:intents"


def pending_key(prefix: str, partition: int) -> str:
    """Hash of `<tenant>|<side>` → intents appended but not applied yet."""
    return f"{prefix}:{{p{partition}}}:pending"


def lease_key(prefix: str, partition: int) -> str:
    return f"{prefix}:{{p{partition}}}:lease"


def dead_letter_key(prefix: str, partition: int) -> str:
    return f"{prefix}:{{p{partition}}}:dead"


def blocked_key(prefix: str, partition: int) -> str:
    """Hash of tenant → id of the dead-lettered intent its later intents wait behind."""
    return f"{prefix}:{{p{partition}}}:blocked"


def redrive_key(prefix: str, partition: int) -> str:
    """Set of tenants whose dead letters the partition's worker should re-apply."""
    return f"{prefix}:{{p{partition}}}:redrive"


def operator_key(prefix: str, partition: int) -> str:
    """List of operator requests on dead letters (JSON: resolve or discard) for the partition's worker."""
    return f"{prefix}:{{p{partition}}}:operator"


def ledger_key(prefix: str, partition: int) -> str:
    """Sorted set of intent ids the HTTP applier sent (score -ms) or applied (score ms)."""
    return f"{prefix}:{{p{partition}}}:applied"


def pending_field(tenant: str, side: str) -> str:
    return f"{tenant}|{side}"


def workers_key(prefix: str) -> str:
    """Sorted set of worker id → time of its last beat (ms): the live workers, for fair shares and health
    checks. One key for the whole buffer (no hash tag)."""
    return f"{prefix}:workers"


def worker_stats_key(prefix: str) -> str:
    """Hash of counter name → total over every worker (applied, retries, dead_lettered, parked). One key for
    the whole buffer (no hash tag): workers add their deltas about once a second."""
    return f"{prefix}:worker-stats"


def copy_open_key(prefix: str, partition: int) -> str:
    """Hash of `<tenant>|<resource>` → when its copy began (ms): the REST copies in progress, whose
    records the worker marks before it applies a write to them (`buffer_worker.copy_marks`)."""
    return f"{prefix}:{{p{partition}}}:copy-open"


def copy_items_key(prefix: str, partition: int, copy: str) -> str:
    """Hash of record key → `m` (mirroring wrote it) or the copy's claim, for one copy `<tenant>|<resource>`
    in progress; deleted when the copy is done."""
    return f"{prefix}:{{p{partition}}}:copy-items:{copy}"


def copy_facts_key(prefix: str, partition: int) -> str:
    """Hash of `<tenant>|<resource>|<how>` → records mirroring wrote, intents settled, ... during a copy."""
    return f"{prefix}:{{p{partition}}}:copy-facts"


def copy_name(tenant: str, resource: str) -> str:
    """One copy's name in the keys above: tenant ids and resource names never hold `|`."""
    return f"{tenant}|{resource}"
