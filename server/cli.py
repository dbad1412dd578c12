"""The `berth` command: `serve` runs the server; the other commands talk to a running
server over the admin API (server/client.py), except `pull`, which downloads weights
on this machine (server/pull.py).

Nothing heavy is imported at the top (no aiohttp, no huggingface_hub): `berth --help`
and `berth ls` start fast. Every failure of a client command is one line on stderr,
`berth: <message>`, and exit status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server import cli_format as fmt
from server.client import DEFAULT_URL, Client, ClientError

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often `--wait` looks at a deployment
LOG_POLL_S = 1.0  # how often `logs -f` asks for new lines
_FORMATTER = argparse.RawDescriptionHelpFormatter


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ClientError as e:
        return _fail(e.message)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `berth ls | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # the promise: never a traceback
        if os.environ.get("BERTH_DEBUG"):
            raise
        return _fail(f"unexpected error: {type(e).__name__}: {e} (BERTH_DEBUG=1 shows more)")


# -- the parser ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # --url/--token work before or after the command: on the subparsers they default to
    # SUPPRESS, so a value given before the command is not overwritten.
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--url", default=argparse.SUPPRESS,
                      help=f"berth server (default: $BERTH_URL, else {DEFAULT_URL})")
    conn.add_argument("--token", default=argparse.SUPPRESS,
                      help="admin token, sent as a Bearer token (default: $BERTH_TOKEN)")

    parser = argparse.ArgumentParser(
        prog="berth", formatter_class=_FORMATTER,
        description="Dedicated, always-on model deployments on one machine.",
        epilog="environment:\n  BERTH_URL    the server the client commands talk to\n"
               "  BERTH_TOKEN  the admin token they send\n\n"
               "Run `berth COMMAND --help` for a command's options and an example.")
    parser.add_argument("--url", default=None,
                        help=f"berth server (default: $BERTH_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=None,
                        help="admin token, sent as a Bearer token (default: $BERTH_TOKEN)")
    parser.add_argument("--version", action="version", version=f"berth {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int] | None, help: str,
                example: str, client: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                           epilog="example:\n" + example, formatter_class=_FORMATTER,
                           parents=[conn] if client else [])
        p.set_defaults(run=run)
        return p

    serve = command("serve", None, "run the server: router, supervisor, engines",
                    "  berth serve --config config.toml --port 8080", client=False)
    serve.description = ("Start berth: every deployment of the config starts in its own "
                         "engine process; Ctrl-C stops them all.")
    serve.add_argument("--config", default="config.toml",
                       help="path to config.toml (default: %(default)s)")
    serve.add_argument("--host", help="override [server] host")
    serve.add_argument("--port", type=int, help="override [server] port")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")

    command("tui", _tui, "open the admin console: deployments, live usage, billing",
            "  berth tui\n  berth tui --url http://10.0.0.5:8080 --token $BERTH_TOKEN")

    p = command("deploy", _deploy, "create a deployment: an endpoint name, a model, a tier",
                "  berth deploy chat2 --model berth-demo/tiny-random-llama-chat "
                "--hardware micro --wait")
    p.add_argument("name", help="endpoint name (a DNS label: a-z, 0-9, -)")
    p.add_argument("--model", required=True, help="model id, e.g. facebook/opt-125m")
    p.add_argument("--hardware", required=True, metavar="TIER",
                   help="hardware tier, e.g. micro, small, a10")
    p.add_argument("--owner", help="the user the deployment belongs to")
    _wait_options(p, "follow its status until it is ready (exit 0) or failed (exit 1)")
    _json_option(p)

    p = command("ls", _ls, "list the deployments and their status", "  berth ls --json")
    _json_option(p)

    p = command("rm", _rm, "delete a deployment: stop its engine and free its name",
                "  berth rm chat2 --yes")
    p.add_argument("name", help="deployment (endpoint) name")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _json_option(p)

    for verb, text in (("stop", "stop a deployment's engine; it stays down until started"),
                       ("start", "start a stopped (or failed) deployment again"),
                       ("restart", "restart a deployment's engine")):
        p = command(verb, _action, text, f"  berth {verb} chat2")
        p.add_argument("name", help="deployment (endpoint) name")
        if verb != "stop":
            _wait_options(p, "follow its status until it is ready (exit 0) or failed (exit 1)")
        _json_option(p)

    p = command("logs", _logs, "print a deployment's engine log",
                "  berth logs chat2 -n 50 -f")
    p.add_argument("name", help="deployment (endpoint) name")
    p.add_argument("-n", "--tail", type=_positive_int, default=200, metavar="N",
                   help="how many of the last lines (default: %(default)s)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until Ctrl-C")

    p = command("events", _events, "list a deployment's state changes and their reasons",
                "  berth events chat2 -n 20")
    p.add_argument("name", help="deployment (endpoint) name")
    p.add_argument("-n", "--limit", type=_positive_int, default=100, metavar="N",
                   help="how many of the latest events (default: %(default)s)")
    _json_option(p)

    p = command("models", _models, "list the model catalog: size, tiers that fit, weights",
                "  berth models")
    _json_option(p)

    p = command("usage", _usage, "the billing table: billed seconds and cost",
                "  berth usage --group-by owner --since 2026-12-01\n"
                "  berth usage --csv > billing.csv")
    p.add_argument("--group-by", choices=["deployment", "owner", "day"], default="deployment")
    p.add_argument("--since", help="ISO 8601 time or unix seconds (default: the beginning)")
    p.add_argument("--until", help="ISO 8601 time or unix seconds (default: now)")
    p.add_argument("--csv", action="store_true", help="write CSV to stdout")
    _json_option(p)

    p = command("users", _users, "create a user, or list them",
                "  berth users create alice\n  berth users")
    p.add_argument("verb", nargs="?", choices=["create", "ls"], default="ls")
    p.add_argument("name", nargs="?", help="the new user's name (create)")
    _json_option(p)

    p = command("keys", _keys, "API keys: create one for a user (shown once), list, revoke",
                "  berth keys create --user alice --name laptop\n  berth keys ls\n"
                "  berth keys revoke 3f2a9c1b7d00")
    p.add_argument("verb", choices=["create", "ls", "revoke"])
    p.add_argument("id", nargs="?", help="the key id (revoke)")
    p.add_argument("--user", help="whose key (create)")
    p.add_argument("--name", help="a label for the key (create)")
    _json_option(p)

    p = command("pull", _pull, "download a model's weights from the Hugging Face Hub "
                "(on this machine, not through the server)",
                "  berth pull facebook/opt-125m --config config.toml\n"
                "  HF_TOKEN=hf_... berth pull meta-llama/Meta-Llama-3-8B-Instruct "
                "--models-dir /srv/models", client=False)
    p.add_argument("model", help="model id (ORG/NAME) or a catalog alias")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--models-dir", type=Path, metavar="DIR",
                       help="download into DIR/ORG/NAME")
    where.add_argument("--config", type=Path, help="use [server] models_dir of this config "
                       "(default: ./config.toml where it exists, else ./models)")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="give up on the hub after S seconds without an answer "
                   "(default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def _wait_options(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--wait", action="store_true", help=text)
    p.add_argument("--timeout", type=float, default=900.0, metavar="S",
                   help="with --wait: give up after S seconds (default: %(default)s)")


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


# -- serve -------------------------------------------------------------------------------

def _serve(args: argparse.Namespace) -> int:
    from server.config import ConfigError, load_config

    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"berth: {e}", file=sys.stderr)
        return 2
    # Imported here so `berth --help` stays fast.
    from server.app import create_app
    from server.http_serve import serve
    from server.statelock import StateDirBusy

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    # Bind before anything starts: a busy port must not cost a round of engine starts.
    try:
        sock = _listen(host, port)
    except OSError as e:
        print(f"berth: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    app = create_app(config)
    try:
        serve(app, sock, loop=_new_loop(), handler_cancellation=True, shutdown_timeout=10,
              max_connections=config.server.max_connections,
              idle_timeout_s=config.server.idle_timeout_s,
              access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
              on_ready=lambda: log.info("berth serving on http://%s:%d (state in %s)",
                                        host, port, config.server.state_dir))
    except (StateDirBusy, ConfigError) as e:
        print(f"berth: {e}", file=sys.stderr)
        return 2
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("berth-serve")
    except PackageNotFoundError:
        return "unknown"


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed: a cheaper event loop for the router."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- client commands ---------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Client:
    token = args.token or os.environ.get("BERTH_TOKEN") or _local_admin_token()
    return Client(args.url, token)


def _tui(args: argparse.Namespace) -> int:
    """Exec `python -m tui`: the server package never imports textual. The token goes
    in the environment, not the command line (where `ps` would show it)."""
    from server.client import default_url

    url = args.url or default_url()
    token = (args.token or os.environ.get("BERTH_TOKEN") or os.environ.get("BERTH_ADMIN_TOKEN")
             or _local_admin_token())
    env = {**os.environ, "BERTH_URL": url}
    if token:
        env["BERTH_TOKEN"] = token
    os.execve(sys.executable, [sys.executable, "-m", "tui", "--url", url], env)
    return 0  # not reached


def _local_admin_token() -> str | None:
    """The admin token of the server whose config.toml is in this folder, when local."""
    try:
        from server.config import ConfigError, load_config

        path = load_config("config.toml").server.state_dir / "admin.token"
        return path.read_text().strip() or None
    except (ConfigError, OSError):
        return None


def _usage(args: argparse.Namespace) -> int:
    query = {"group_by": args.group_by, **{k: v for k, v in (("since", args.since),
                                                             ("until", args.until)) if v}}
    report = _client(args).get("/api/billing", query)
    if args.json:
        fmt.print_json(report)
        return 0
    rows = [[_billing_key(d), f"{d['billed_seconds']:.3f}", d["cost"], d["currency"]]
            for d in report["data"]]
    # one TOTAL per currency: amounts in different currencies are never added up
    rows += [["TOTAL", f"{t['billed_seconds']:.3f}", t["cost"], t["currency"]]
             for t in report.get("totals") or [report["total"]]]
    headers = [args.group_by.upper(), "BILLED_SECONDS", "COST", "CURRENCY"]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([h.lower() for h in headers])
        writer.writerows(rows)
    else:
        print(fmt.table(headers, rows))
    return 0


def _billing_key(row: dict[str, Any]) -> str:
    """A deleted deployment is marked: its name may belong to a newer one now."""
    if row.get("deleted"):
        return f"{row['key']} (deleted #{row['deployment_id']})"
    return str(row["key"])


def _users(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.verb == "create":
        if not args.name:
            return _fail("berth users create NAME: the name is missing")
        user = client.request("POST", "/api/users", {"name": args.name})
        if args.json:
            fmt.print_json(user)
        else:
            print(f"created user {user['name']}")
        return 0
    users = client.get("/api/users")["data"]
    if args.json:
        fmt.print_json({"data": users})
    else:
        print(fmt.table(["NAME", "CREATED"], [[u["name"], u["created_at"]] for u in users]))
    return 0


def _keys(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.verb == "create":
        if not args.user:
            return _fail("berth keys create: --user is required")
        body = {"name": args.name} if args.name else {}
        key = client.request("POST", f"/api/users/{urllib.parse.quote(args.user, safe='')}"
                             "/keys", body)
        if args.json:
            fmt.print_json(key)
        else:
            print(key["key"])
            print(f"(key {key['id']} for {key['user']}: shown this once, only a hash is kept)",
                  file=sys.stderr)
        return 0
    if args.verb == "revoke":
        if not args.id:
            return _fail("berth keys revoke ID: the key id is missing (see `berth keys ls`)")
        client.request("DELETE", f"/api/keys/{urllib.parse.quote(args.id, safe='')}")
        print(f"revoked key {args.id}")
        return 0
    keys = client.get("/api/keys")["data"]
    if args.json:
        fmt.print_json({"data": keys})
    else:
        print(fmt.table(["ID", "USER", "NAME", "CREATED", "REVOKED"],
                        [[k["id"], k["user"], k["name"], k["created_at"], k["revoked_at"]]
                         for k in keys]))
    return 0


def _deploy(args: argparse.Namespace) -> int:
    client = _client(args)
    dep = client.create(args.name, args.model, args.hardware, args.owner)
    if args.json and not args.wait:
        fmt.print_json(dep)
    elif not args.json:
        fmt.print_deployment(dep, client.url)
    return _follow(client, dep, args, previous=None) if args.wait else 0


def _ls(args: argparse.Namespace) -> int:
    deps = _client(args).deployments()
    if args.json:
        fmt.print_json({"data": deps})
        return 0
    if not deps:
        print("no deployments (create one: berth deploy NAME --model ID --hardware TIER)")
        return 0
    now = datetime.now(UTC)
    headers = ["NAME", "MODEL", "HARDWARE", "STATUS", "RESTARTS", "PID", "AGE"]
    rows = [[d.get("name"), d.get("model"), d.get("hardware"), d.get("status"),
             d.get("restarts"), d.get("pid"), fmt.age(d.get("created_at"), now)] for d in deps]
    if any(d.get("status") != "ready" and d.get("reason") for d in deps):
        headers.append("REASON")
        for row, d in zip(rows, deps, strict=True):
            row.append(d.get("reason") if d.get("status") != "ready" else None)
    print(fmt.table(headers, rows))
    return 0


def _rm(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail(f"not deleting {args.name} without confirmation: pass --yes")
        dep = client.deployment(args.name)  # also: a clean 404 before asking
        try:
            answer = input(f"delete deployment {dep['name']} ({dep.get('model')} on "
                           f"{dep.get('hardware')}, {dep.get('status')})? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted", file=sys.stderr)
            return 1
    dep = client.delete(args.name)
    if args.json:
        fmt.print_json(dep)
    else:
        print(f"deleted {dep.get('name', args.name)}")
    return 0


def _action(args: argparse.Namespace) -> int:
    client = _client(args)
    wait = getattr(args, "wait", False)
    # Before a restart the deployment may be ready already: wait for a *new* ready.
    previous = client.deployment(args.name) if wait and args.command == "restart" else None
    dep = client.action(args.name, args.command)
    if wait:
        return _follow(client, dep, args, previous=previous)
    if args.json:
        fmt.print_json(dep)
    else:
        print(fmt.status_line(dep))
    return 0


def _logs(args: argparse.Namespace) -> int:
    client = _client(args)
    got = client.logs(args.name, tail=args.tail)
    fmt.print_lines(got.get("lines") or [])
    if not args.follow:
        return 0
    offset = got.get("offset")
    if not isinstance(offset, int):
        return _fail("this berth server cannot follow logs (its answer has no offset)")
    try:
        while True:
            time.sleep(LOG_POLL_S)
            got = client.logs(args.name, offset=offset)
            fmt.print_lines(got.get("lines") or [])
            offset = got.get("offset", offset)
    except KeyboardInterrupt:
        return 0


def _events(args: argparse.Namespace) -> int:
    events = _client(args).events(args.name, limit=args.limit)
    if args.json:
        fmt.print_json({"data": events})
        return 0
    rows = [[fmt.local_time(e.get("at")), e.get("status"), e.get("pid"), e.get("reason")]
            for e in events]
    print(fmt.table(["AT", "STATUS", "PID", "REASON"], rows) if rows else "no events")
    return 0


def _models(args: argparse.Namespace) -> int:
    models = _client(args).models()
    if args.json:
        fmt.print_json({"data": models})
        return 0
    rows = [[m.get("id"), m.get("task"), fmt.count(m.get("parameters")),
             fmt.bytes(m.get("memory_bytes")), m.get("smallest_tier"), fmt.yes(m.get("present")),
             fmt.yes(m.get("available"))] for m in models]
    print(fmt.table(["ID", "TASK", "PARAMS", "MEMORY", "SMALLEST-TIER", "PRESENT",
                  "AVAILABLE"], rows))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from server import pull
    from server.config import ConfigError, load_config

    models_dir = args.models_dir
    if models_dir is None:
        config_path = args.config or Path("config.toml")
        if args.config is not None or config_path.is_file():
            try:
                models_dir = load_config(config_path).server.models_dir
            except ConfigError as e:
                print(f"berth: {e}", file=sys.stderr)
                return 2
        else:
            models_dir = Path("models")
    model_id, repo_id = pull.resolve(args.model)
    try:
        dest = pull.destination(models_dir, model_id)
        source = f" from {repo_id}" if repo_id != model_id else ""
        print(f"pulling {model_id}{source} into {dest}", flush=True)
        done = pull.pull(model_id, models_dir, revision=args.revision, timeout=args.timeout,
                         progress=not args.quiet)
    except pull.PullError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail(f"pull of {model_id} interrupted; run it again to resume", 130)
    print(f"pulled {done.model}: {done.files} files, {fmt.bytes(done.size_bytes)} in {done.path}")
    return 0


def _follow(client: Client, dep: dict[str, Any], args: argparse.Namespace,
            previous: dict[str, Any] | None) -> int:
    """Poll the deployment, printing each change, until ready (0) or failed (1).

    `previous` (before a restart): its ready_at/pid are not the ready we wait for.
    """
    out = sys.stderr if args.json else sys.stdout
    name = dep["name"]
    old = (previous or {}).get("ready_at"), (previous or {}).get("pid")
    deadline = time.monotonic() + args.timeout
    seen: tuple[Any, ...] | None = None
    try:
        while True:
            key = (dep.get("status"), dep.get("reason"), dep.get("pid"), dep.get("restarts"))
            if key != seen:
                seen = key
                print(fmt.change_line(dep), file=out, flush=True)
            status = dep.get("status")
            fresh = previous is None or (dep.get("ready_at"), dep.get("pid")) != old
            if status == "ready" and fresh:
                if args.json:
                    fmt.print_json(dep)
                else:
                    print(f"{name} is ready: {fmt.endpoint(dep, client.url)}")
                return 0
            if status in ("failed", "stopped", "deleted"):
                if args.json:
                    fmt.print_json(dep)
                return _fail(f"{name} is {status}" + (f": {dep['reason']}"
                                                      if dep.get("reason") else ""))
            if time.monotonic() > deadline:
                return _fail(f"{name} is not ready after {args.timeout:g} s (status "
                             f"{status}); it keeps going: see `berth events {name}`")
            time.sleep(POLL_S)
            dep = client.deployment(name)
    except KeyboardInterrupt:
        return _fail(f"stopped waiting; {name} keeps going (see `berth ls`)", 130)


# -- output ------------------------------------------------------------------------------

def _fail(message: str, code: int = 1) -> int:
    print(f"berth: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
