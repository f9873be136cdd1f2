"""The `tokmodel` command: serve the gateway, and manage accounts, keys and the catalogue.

  tokmodel serve [--host H] [--port P] [--workers N] [--shutdown-timeout SECONDS]
  tokmodel accounts create NAME [--credits AMOUNT] | topup NAME AMOUNT | show NAME [--json]
                    | list [--json] | adjust NAME [-]AMOUNT --note TEXT | audit NAME [--json]
  tokmodel keys create --account NAME [--name LABEL] [LIMITS] | update KEY_ID [LIMITS]
                | list [--account NAME] [--json] | revoke KEY_ID
        LIMITS: [--models PATTERNS] [--rpm N] [--tpm N] [--spend-limit CREDITS]
                [--daily-limit CREDITS] [--monthly-limit CREDITS]
                [--expires-in DURATION | --expires ISO8601]; update also --clear-NAME
  tokmodel usage --account NAME [--limit N] [--json]
  tokmodel holds list [--json] | release [--older-than SECONDS] [--refund]
  tokmodel providers check [--file PATH]
  tokmodel catalogue import FILE   (LiteLLM's price-map JSON -> providers.yaml models, printed)

Amounts are credits (1 credit = 1 USD of list price), typed and shown exactly, to one
nano-credit (9 decimals); JSON gives them as exact decimal strings and as integer
`*_nano` fields. `accounts audit` exits 1 when the account disagrees with its ledger. A new
key's secret is printed once, alone on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runtime.billing.credits import format_credits, parse_credits
from runtime.limits import options as keyopts
from runtime.settings import Settings

if TYPE_CHECKING:
    from runtime.catalogue import Deployment


def _store():
    from runtime.store import open_store

    return open_store(Settings.from_env().database_url)


def _account_json(account: Any) -> dict[str, Any]:
    return {"id": account.id, "name": account.name,
            "balance": format_credits(account.balance_nano),
            "balance_nano": account.balance_nano,
            "debt": format_credits(account.debt_nano), "debt_nano": account.debt_nano,
            "created_at": str(account.created_at),
            "disabled": account.disabled_at is not None}


def _account_text(account: Any, separator: str = "\t") -> str:
    debt = f"{separator}debt {format_credits(account.debt_nano)}" if account.debt_nano else ""
    name = account.name + (":" if separator == " " else "")
    disabled = f"{separator}disabled" if account.disabled_at else ""
    return f"{name}{separator}{format_credits(account.balance_nano)} credits{debt}{disabled}"


def _signed_credits(text: str) -> int:
    """'-1.5' -> -1500000000: an adjustment's amount, either sign."""
    negative = text.startswith("-")
    nano = parse_credits(text[1:] if negative else text)
    return -nano if negative else nano


def _key_json(key: Any) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "account": key.account_name,
            "prefix": key.display_prefix, "created_at": str(key.created_at),
            "revoked": key.revoked_at is not None,
            "revoked_at": str(key.revoked_at) if key.revoked_at else None,
            "manage": key.manage}


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.serve import serve
    from runtime.settings import Settings

    timeout = args.shutdown_timeout
    if timeout is None:
        timeout = Settings.from_env().shutdown_timeout
    serve(args.host, args.port, args.workers, args.worker_class,
          connections=args.worker_connections, shutdown_timeout=timeout)
    return 0


def cmd_accounts(args: argparse.Namespace) -> int:
    from runtime.store import AccountExists, AccountNotFound

    store = _store()
    try:
        if args.action == "create":
            account = store.create_account(args.name, parse_credits(args.credits))
        elif args.action == "topup":
            account = store.topup(args.name, parse_credits(args.amount))
        elif args.action == "adjust":
            account = store.adjust(args.name, _signed_credits(args.amount), args.note)
        elif args.action == "audit":
            return _audit(store.audit(args.name), args.json)
        elif args.action in ("disable", "enable"):
            account = store.set_account_disabled(args.name, args.action == "disable")
        elif args.action == "list":
            accounts = store.list_accounts()
            if args.json:
                print(json.dumps([_account_json(a) for a in accounts], indent=2))
            else:
                for a in accounts:
                    print(_account_text(a))
            return 0
        else:
            account = store.get_account(args.name)
            if account is None:
                return _fail(f"no account named {args.name!r}")
    except AccountExists:
        return _fail(f"an account named {args.name!r} already exists")
    except AccountNotFound:
        return _fail(f"no account named {args.name!r}")
    except ValueError as exc:
        return _fail(str(exc))
    if getattr(args, "json", False):
        print(json.dumps(_account_json(account), indent=2))
    else:
        print(_account_text(account, " "))
    return 0


def _audit(report: dict[str, Any], as_json: bool) -> int:
    """Print an audit; exit 1 when it found a discrepancy."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        state = "ok" if report["ok"] else "DISCREPANCY"
        print(f"{report['account']}: {state}: balance "
              f"{format_credits(report['balance_nano'])}, debt "
              f"{format_credits(report['debt_nano'])}, {report['entries']} ledger entries, "
              f"{report['open_holds']} open holds, {report['usage_rows']} usage rows")
        for problem in report["problems"]:
            print(f"  {problem}")
    return 0 if report["ok"] else 1


def cmd_keys(args: argparse.Namespace) -> int:
    from runtime.store import AccountNotFound

    store = _store()
    try:
        if args.action in ("create", "update"):
            try:
                limits = keyopts.changes(args)
            except ValueError as exc:
                return _fail(str(exc))
        if args.action == "update":
            if args.manage is None and not limits:
                return _fail("nothing to update: give --manage/--no-manage or a limit flag")
            if args.manage is not None and not store.set_key_manage(args.key_id, args.manage):
                return _fail(f"no key {args.key_id!r}")
            if store.update_key_limits(args.key_id, limits) is None:
                return _fail(f"no key {args.key_id!r}")
            if args.manage is not None:
                kind = "a management key" if args.manage else "an inference key"
                print(f"{args.key_id} is now {kind}")
            if limits:
                print(f"updated the limits of {args.key_id}")
            return 0
        if args.action == "create":
            record, secret = store.create_key(args.account, args.name, limits,
                                              manage=args.manage)
            kind = "management key" if args.manage else "key"
            print(f"created {kind} {record.id} ({record.name}) for account {args.account}; "
                  "the secret is shown once:", file=sys.stderr)
            print(f"key_id: {record.id}")
            print(secret)
            return 0
        if args.action == "list":
            keys = store.list_keys(args.account)
            if args.json:
                spend = store.spend_by_key([k.id for k in keys])
                print(json.dumps([{**_key_json(k), **keyopts.limits_json(k, spend[k.id])}
                                  for k in keys], indent=2))
            else:
                for k in keys:
                    state = "revoked" if k.revoked_at else "active"
                    kind = "manage" if k.manage else "inference"
                    print(f"{k.id}\t{k.name}\t{k.display_prefix}\t{state}\t{kind}")
            return 0
        if not store.revoke_key(args.key_id):
            return _fail(f"no active key {args.key_id!r}")
        print(f"revoked {args.key_id}")
        return 0
    except AccountNotFound:
        return _fail(f"no account named {args.account!r}")


def cmd_usage(args: argparse.Namespace) -> int:
    from runtime.store import AccountNotFound

    try:
        rows = _store().usage(args.account, args.limit)
    except AccountNotFound:
        return _fail(f"no account named {args.account!r}")
    out = [{"request_id": r.request_id, "created_at": str(r.created_at), "model": r.model,
            "endpoint": r.endpoint, "status": r.status, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "cost": format_credits(r.cost_nano),
            "cost_nano": r.cost_nano, "latency_ms": r.latency_ms, "details": r.details}
           for r in rows]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in out:
            print(f"{r['created_at']}\t{r['model']}\t{r['status']}\t{r['prompt_tokens']}+"
                  f"{r['completion_tokens']} tok\t{r['cost']} credits")
    return 0


def cmd_holds(args: argparse.Namespace) -> int:
    from runtime.billing.sweeper import HoldSettings

    store = _store()
    if args.action == "list":
        rows = [{"request_id": h.request_id, "account_id": h.account_id,
                 "amount": format_credits(h.amount), "amount_nano": h.amount,
                 "created_at": str(h.created_at), "owner": h.owner,
                 "heartbeat_at": str(h.heartbeat_at) if h.heartbeat_at else None,
                 "progress": h.progress} for h in store.list_holds()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for r in rows:
            produced = r["progress"]
            print(f"{r['request_id']}\taccount {r['account_id']}\t{r['amount']} credits held"
                  f"\towner {r['owner'] or '-'}\tlast heartbeat {r['heartbeat_at'] or '-'}"
                  f"\tproduced {format_credits(produced['cost']) if produced else '-'}")
        return 0
    older = args.older_than
    if older is None:
        older = HoldSettings.from_env().stale_seconds
    swept = store.sweep_stale_holds(older, refund=args.refund, limit=1_000_000)
    charged = [h for h in swept if h.logged]
    print(f"{len(swept)} hold(s) without a heartbeat for {older:g} s: {len(charged)} settled "
          f"for what was produced ({format_credits(sum(h.charged for h in charged))} credits "
          f"charged), {len(swept) - len(charged)} given back in full")
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    from runtime.catalogue import CatalogueError, load_catalogue

    path = args.file or Settings.from_env().providers_file
    try:
        catalogue = load_catalogue(path)
    except CatalogueError as exc:
        for problem in exc.problems:
            print(f"error: {exc.source}: {problem}", file=sys.stderr)
        return 1
    print(f"catalogue {path or 'providers.yaml (compiled)'}: valid, "
          f"{len(catalogue.models)} models, {len(catalogue.aliases)} aliases")
    for pid, provider in sorted(catalogue.providers.items()):
        models = sum(1 for m in catalogue.models.values() if m.provider is provider)
        deployments = provider.deployments
        if len(deployments) == 1:
            print(f"  {pid:<12} {models:>3} models  {provider.base_url}  "
                  f"{_deployment_state(deployments[0])}")
            continue
        usable = sum(1 for d in deployments if d.usable)
        state = "usable" if usable else "not usable"
        print(f"  {pid:<12} {models:>3} models  {state} ({usable} of {len(deployments)} "
              "deployments)")
        for d in deployments:
            print(f"    {pid}/{d.name}: {_deployment_state(d)}  {d.base_url}  weight {d.weight}")
    return 0


def _deployment_state(deployment: Deployment) -> str:
    if deployment.api_key:
        return f"usable ({deployment.api_key_env} set)"
    if deployment.keyless:
        return "usable (keyless local server)"
    return f"not usable: set {deployment.api_key_env}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokmodel", description="TokModel AI gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the gateway under gunicorn")
    serve.add_argument("--host", default=os.environ.get("TOKMODEL_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("TOKMODEL_PORT", 8080)))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("TOKMODEL_WORKERS", 2)))
    serve.add_argument("--worker-class", default="gevent", choices=["gevent", "gthread", "sync"])
    serve.add_argument("--worker-connections", type=int,
                       default=int(os.environ.get("TOKMODEL_WORKER_CONNECTIONS", 2000)),
                       help="connections (open streams included) one gevent worker holds at "
                            "once; more wait in the listen queue (default: "
                            "TOKMODEL_WORKER_CONNECTIONS or 2000)")
    serve.add_argument("--shutdown-timeout", type=float, default=None,
                       help="seconds open requests and streams get after SIGTERM "
                            "(default: TOKMODEL_SHUTDOWN_TIMEOUT or 30)")
    serve.set_defaults(func=cmd_serve)

    accounts = sub.add_parser("accounts", help="accounts and their credits")
    acc = accounts.add_subparsers(dest="action", required=True)
    create = acc.add_parser("create")
    create.add_argument("name")
    create.add_argument("--credits", default="0")
    create.add_argument("--json", action="store_true")
    topup = acc.add_parser("topup")
    topup.add_argument("name")
    topup.add_argument("amount")
    topup.add_argument("--json", action="store_true")
    show = acc.add_parser("show")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    listing = acc.add_parser("list")
    listing.add_argument("--json", action="store_true")
    adjust = acc.add_parser("adjust", help="a manual correction of the balance, either sign")
    adjust.add_argument("name")
    adjust.add_argument("amount", help="credits, e.g. 2.5 or -0.75")
    adjust.add_argument("--note", required=True, help="why (kept in the ledger)")
    adjust.add_argument("--json", action="store_true")
    for action, what in (("disable", "refuse every key of the account, console included"),
                         ("enable", "accept the account's keys again")):
        toggle = acc.add_parser(action, help=what)
        toggle.add_argument("name")
        toggle.add_argument("--json", action="store_true")
    audit = acc.add_parser("audit", help="check the balance, holds and usage against the "
                                         "ledger (exit 1 on a discrepancy)")
    audit.add_argument("name")
    audit.add_argument("--json", action="store_true")
    accounts.set_defaults(func=cmd_accounts)

    keys = sub.add_parser("keys", help="API keys")
    ks = keys.add_subparsers(dest="action", required=True)
    kcreate = ks.add_parser("create")
    kcreate.add_argument("--account", required=True)
    kcreate.add_argument("--name", default="default")
    kcreate.add_argument("--manage", action="store_true",
                         help="a management key: may open the console and manage keys")
    keyopts.add_flags(kcreate, clearing=False)
    kupdate = ks.add_parser("update", help="change a key: management, limits (next request on)")
    kupdate.add_argument("key_id")
    kupdate.add_argument("--manage", action=argparse.BooleanOptionalAction, default=None,
                         help="--manage: a management key; --no-manage: an inference key")
    keyopts.add_flags(kupdate, clearing=True)
    klist = ks.add_parser("list")
    klist.add_argument("--account", help="only this account's keys (default: all)")
    klist.add_argument("--json", action="store_true")
    krevoke = ks.add_parser("revoke")
    krevoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    usage = sub.add_parser("usage", help="an account's usage log, newest first")
    usage.add_argument("--account", required=True)
    usage.add_argument("--limit", type=int, default=50)
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(func=cmd_usage)

    holds = sub.add_parser("holds", help="credit holds")
    hs = holds.add_subparsers(dest="action", required=True)
    hs.add_parser("list", help="open holds: owner, last heartbeat, what was produced"
                  ).add_argument("--json", action="store_true")
    release = hs.add_parser(
        "release", help="settle holds left by a lost worker, as the gateway's sweeper does",
        description="Settle every hold whose heartbeat is older than --older-than seconds "
        "(default TOKMODEL_HOLD_STALE_SECONDS): charged at what was recorded as produced (the "
        "prompt estimate plus the output counted so far, usage row with status 499), or "
        "given back in full when the provider never accepted the request. Holds of live "
        "requests keep a fresh heartbeat and are not touched.")
    release.add_argument("--older-than", type=float, default=None, metavar="SECONDS")
    release.add_argument("--refund", action="store_true",
                         help="give every such hold back in full, charging nothing")
    holds.set_defaults(func=cmd_holds)

    providers = sub.add_parser("providers", help="the catalogue")
    ps = providers.add_subparsers(dest="action", required=True)
    check = ps.add_parser("check", help="validate the catalogue, say which providers are usable")
    check.add_argument("--file")
    providers.set_defaults(func=cmd_providers)

    catalogue = sub.add_parser("catalogue", help="build catalogue entries")
    cs = catalogue.add_subparsers(dest="action", required=True)
    imp = cs.add_parser("import", help="print providers.yaml models from LiteLLM's price map")
    imp.add_argument("file")
    catalogue.set_defaults(func=cmd_catalogue)
    return parser


def cmd_catalogue(args: argparse.Namespace) -> int:
    import yaml

    from runtime.litellm_import import catalogue_models

    try:
        with open(args.file, encoding="utf-8") as fh:
            price_map = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    models = catalogue_models(price_map if isinstance(price_map, dict) else {})
    print(f"# {len(models)} models from {args.file}; review, then merge into providers.yaml")
    print(yaml.safe_dump({"models": models}, sort_keys=False), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
