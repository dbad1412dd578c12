"""`python -m engines --spec '<EngineSpec JSON>'`: one engine process per deployment.

Lifecycle: parse the spec (bad -> EXIT_BAD_SPEC), bind the Unix socket and answer
/health (`loading`), load the model on the worker thread (`ready`, or `failed` then
EXIT_LOAD_FAILED), serve until SIGTERM/SIGINT (grace for in-flight requests, exit 0)
or until the parent process goes away (EXIT_PARENT_GONE). The socket file is
removed on every way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys

from aiohttp import web

from engines import protocol
from engines.app import STATE, EngineState, create_app
from engines.protocol import EngineSpec

log = logging.getLogger("engines")

PARENT_POLL_S = 1.0
PR_SET_PDEATHSIG = 1


def _setup_logging(name: str) -> None:
    fmt = f"%(asctime)s %(levelname)s [{name} pid {os.getpid()}] %(name)s: %(message)s"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(os.environ.get("BERTH_ENGINE_LOG_LEVEL", "INFO").upper())
    logging.captureWarnings(True)


def _unlink(path: str, inode: int | None = None) -> None:
    """Remove the socket file; with `inode`, only if it is still ours (a new engine of
    the same deployment may already have bound the same path)."""
    with contextlib.suppress(FileNotFoundError):
        if inode is None or os.stat(path).st_ino == inode:
            os.unlink(path)


def _pin_cpus(cores: str | None) -> None:
    """Where no cpuset cgroup pins the engine, the server asks it to pin itself."""
    if not cores:
        return
    try:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    except (OSError, ValueError) as exc:
        log.warning("could not pin to cores %s: %s", cores, exc)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent (the server) dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def _watch_parent(state: EngineState, parent: int) -> None:
    while True:
        await asyncio.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            log.error("parent process %d went away; exiting", parent)
            state.request_exit(protocol.EXIT_PARENT_GONE)
            return


async def serve(spec: EngineSpec) -> int:
    """Runs the engine until it is asked to exit; returns the exit status."""
    parent = os.getppid()
    app = create_app(spec, autoload=False)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=protocol.SHUTDOWN_GRACE_S,
        access_log=None,
    )
    await runner.setup()
    state = app[STATE]
    _unlink(spec.socket_path)
    inode: int | None = None
    try:
        site = web.UnixSite(runner, spec.socket_path)
        await site.start()
        inode = os.stat(spec.socket_path).st_ino
        os.chmod(spec.socket_path, 0o600)
        log.info(
            "listening on %s (task %s, model %s)", spec.socket_path, spec.task, spec.model_path
        )
        state.start_loading()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, state, sig, parent)
        _die_with_parent(parent)
        watcher = asyncio.create_task(_watch_parent(state, parent), name="parent-watch")
        code = await state.exit_code
        watcher.cancel()
        log.info(
            "shutting down (%s); %d request(s) in flight",
            protocol.describe_exit(code),
            state.in_flight,
        )
    finally:
        await runner.cleanup()
        if inode is not None:
            _unlink(spec.socket_path, inode)
    return code


def _on_signal(state: EngineState, sig: signal.Signals, parent: int) -> None:
    if os.getppid() != parent:
        log.error("parent process %d went away (%s); exiting", parent, sig.name)
        state.request_exit(protocol.EXIT_PARENT_GONE)
        return
    log.info("received %s", sig.name)
    state.request_exit(protocol.EXIT_OK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__)
    parser.add_argument(protocol.SPEC_ARG, required=True, help="EngineSpec as JSON")
    args = parser.parse_args(argv)
    try:
        spec = EngineSpec.from_json(args.spec)
    except (ValueError, KeyError, TypeError) as exc:
        _setup_logging("engine")
        log.error("bad engine spec: %s", exc)
        return protocol.EXIT_BAD_SPEC
    _setup_logging(spec.name)
    _pin_cpus(os.environ.get("BERTH_CPUS"))
    log.info("engine starting: %s", spec.to_json())
    return asyncio.run(serve(spec))


if __name__ == "__main__":
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # The worker is a daemon thread that may be inside torch (a load cannot be
    # cancelled); skip interpreter teardown rather than race it.
    os._exit(status)
