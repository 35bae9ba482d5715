"""`cutover dead-letters`: list a tenant's dead letters with their cause, what failed (status) and what
the mirror answered (an excerpt), resolve them from the authoritative side, discard one, or show the
audit of those actions (all through the admin API).

A dead letter is named by its intent's id, whole, wherever it is printed: the table's ID, the PARKED
BEHIND of the letters waiting behind it, `cutover buffer`'s BLOCKED BEHIND; `discard` takes that id."""

from __future__ import annotations

import argparse
from typing import Any

from proxy.cli.admin_client import AdminClient
from proxy.cli.support import EXIT_OK, UsageError, format_table, print_json

_ACTIONS = ("list", "resolve", "discard", "audit")


def run_dead_letters(args: argparse.Namespace, client: AdminClient) -> int:
    words: list[str] = list(args.words)
    action = words.pop(0) if words and words[0] in _ACTIONS else "list"
    if action == "discard" and len(words) == 2:  # `discard TENANT ID`, as `--intent ID`
        if args.intent and args.intent != words[1]:
            return _usage(f"two intent ids: {words[1]} and --intent {args.intent}")
        args.intent = words.pop()
    if len(words) > 1:
        return _usage(f"too many arguments: {' '.join(words)}")
    tenant = words[0] if words else None
    if action == "list":
        letters = client.take("/buffer/dead-letters", "dead_letters", limit=args.limit, tenant=tenant)
        body = {"dead_letters": letters}
        return _print(body, args) if args.json else _print_letters(letters)
    if action == "audit":
        body = client.get("/buffer/dead-letters/audit", tenant=tenant, limit=args.limit)
        return _print(body, args) if args.json else _print_audit(body["entries"])
    if tenant is None:
        return _usage(f"dead-letters {action} needs a TENANT")
    if not args.reason:
        return _usage(f"dead-letters {action} needs --reason (kept in the audit log)")
    if action == "resolve":
        body = client.post(f"/buffer/dead-letters/{tenant}/resolve", {"reason": args.reason})
        if args.json:
            return _print(body, args)
        print(
            f"resolution of {body['requested']} dead-lettered intents of {tenant} requested (audit"
            f" #{body['audit_id']}); the partition's worker sets each one's record from the authoritative"
            " side, in order, and unblocks the tenant when the last is gone"
        )
        return EXIT_OK
    if not args.intent:
        return _usage("dead-letters discard needs the dead letter's ID (the intent id the list shows)")
    body = client.post(
        f"/buffer/dead-letters/{tenant}/discard", {"intent_id": args.intent, "reason": args.reason}
    )
    if args.json:
        return _print(body, args)
    print(f"discard of intent {args.intent} of {tenant} requested (audit #{body['audit_id']})")
    return EXIT_OK


def _print_letters(letters: list[dict[str, Any]]) -> int:
    rows = [
        [
            d.get("intent_id") or "-",  # an undecodable letter has none (and belongs to no tenant)
            d.get("tenant", "?"),
            f"{d.get('method', '?')} {d.get('path', '?')}",
            d.get("target", "?"),
            d.get("cause", "?"),
            d.get("status") or "-",  # letters written before statuses were recorded have none
            d.get("parked_behind") or "-",
            "-" if d.get("parked_behind") else d["reason"],  # a parked letter's reason: PARKED BEHIND
            d.get("excerpt") or "-",
        ]
        for d in letters
    ]
    header = ["ID", "TENANT", "REQUEST", "TO", "CAUSE", "STATUS", "PARKED BEHIND", "REASON", "ANSWER"]
    print(format_table(header, rows))
    return EXIT_OK


def _print_audit(entries: list[dict[str, Any]]) -> int:
    rows = [
        [
            str(e["id"]),
            e["at"],
            e["tenant"],
            e["action"],
            ", ".join(e["intent_ids"][:3])
            + (f" (+{len(e['intent_ids']) - 3})" if len(e["intent_ids"]) > 3 else ""),
            e["actor"],
            e["reason"],
        ]
        for e in entries
    ]
    print(format_table(["ID", "AT", "TENANT", "ACTION", "INTENTS", "BY", "REASON"], rows))
    return EXIT_OK


def _print(body: Any, _args: argparse.Namespace) -> int:
    return print_json(body)


def _usage(problem: str) -> int:
    raise UsageError(problem)
