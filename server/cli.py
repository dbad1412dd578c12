"""The `berth` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from server.config import ConfigError, load_config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="berth", description="Dedicated, always-on model deployments on one machine.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server: router, supervisor, engines",
                           description="Start berth: every deployment of the config "
                           "starts in its own engine process; Ctrl-C stops them all.")
    serve.add_argument("--config", default="config.toml",
                       help="path to config.toml (default: %(default)s)")
    serve.add_argument("--host", help="override [server] host")
    serve.add_argument("--port", type=int, help="override [server] port")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"berth: {e}", file=sys.stderr)
        return 2
    # Imported here so `berth --help` stays fast.
    from server.app import create_app

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    app = create_app(config)
    web.run_app(app, host=host, port=port, handler_cancellation=True, shutdown_timeout=10,
                loop=_new_loop(),
                access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
                print=lambda *_: log.info("berth serving on http://%s:%d (state in %s)",
                                          host, port, config.server.state_dir))
    return 0


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed: a cheaper event loop for the router."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    sys.exit(main())
