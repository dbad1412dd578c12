"""`python -m tui [--url URL] [--token TOKEN]`: the admin console (`berth tui` runs this)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tui.settings import DEFAULT_URL, resolve_token, resolve_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="berth tui", description="The berth admin console: deployments, live usage, "
        "billing; create, stop, start, restart and delete deployments.")
    parser.add_argument("--url", help=f"berth server (default: $BERTH_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", help="admin token (default: $BERTH_TOKEN, else "
                        "$BERTH_ADMIN_TOKEN, else the local server's state_dir/admin.token)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="S",
                        help="refresh every S seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if log_file := os.environ.get("BERTH_TUI_LOG"):
        logging.basicConfig(filename=log_file, level=logging.INFO)
    from tui.app import BerthApp

    BerthApp(resolve_url(args.url), resolve_token(args.token), poll_s=max(args.poll, 0.2)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
