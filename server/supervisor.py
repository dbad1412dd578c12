"""The supervisor: one handle per deployment, its state machine, the watchdog, restarts.

Each deployment has one run-loop task that owns its engine process: it spawns the
engine, waits for readiness on the engine's health route, pings it while it runs,
and when it dies records why, backs off (1 s doubling to 60 s) and spawns it again,
until the deployment is stopped or has crashed too often (`failed`). Everything else
(stop requests, shutdown) only sets the handle's wishes and wakes its loop, so a
process is only ever touched by one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from decimal import Decimal
from typing import Any

import aiohttp

from engines.protocol import (
    EXIT_LOAD_FAILED,
    HEALTH,
    EngineSpec,
    HealthState,
    Task,
    describe_exit,
)
from server import catalog
from server.capacity import InsufficientCapacity, Node
from server.config import Config, Tier
from server.deployment import Deployment, EngineLife, slice_meter
from server.launcher import EngineProcess, LocalLauncher
from server.limits import Gate
from server.slices import EXIT_JOIN_FAILED, Driver, NoneDriver, SliceError, SliceSpec
from server.states import State
from server.store import DeploymentRow, NameTaken, Store
from server.weights import WeightsNotFound, find_weights, infer_task

log = logging.getLogger(__name__)

START_POLL_S = 0.25


class Supervisor:
    def __init__(self, config: Config, store: Store, *, launcher: LocalLauncher | None = None,
                 slices: Driver | None = None, slices_reason: str = "",
                 node: Node | None = None) -> None:
        self.config = config
        self.store = store
        self.launcher = launcher or LocalLauncher()
        self.slices: Driver = slices or NoneDriver()
        self.slices_reason = slices_reason
        self.node = node or Node.from_config(config.node, cores=sorted(os.sched_getaffinity(0)),
                                             memory_bytes=0, gpus=0)
        self._deployments: dict[str, Deployment] = {}
        self._ended: list[EngineLife] = []  # engines reaped since the meter last looked
        self._registry_lock = asyncio.Lock()
        state_dir = config.server.state_dir
        self.socket_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"

    # --- registry ---------------------------------------------------------------------

    def get(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    def all(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: d.name)

    def take_ended(self) -> list[EngineLife]:
        """The engines reaped since the last call, oldest first (deleted ones too)."""
        ended, self._ended = self._ended, []
        return ended

    # --- lifecycle of the supervisor ------------------------------------------------------

    async def start(self) -> None:
        """Record the config's deployments, then bring back every live one (always-on)."""
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.socket_dir.glob("*.sock"):
            stale.unlink(missing_ok=True)
        for name in await asyncio.to_thread(self.slices.cleanup_stale):
            log.warning("removed the stale slice of %s (left by a server that died)", name)
        for owner in {c.owner for c in self.config.deployments} - {"admin"}:
            if await self.store.get_user(owner) is None:  # config owners are users
                await self.store.create_user(owner)
        for cfg in self.config.deployments:
            await self.store.upsert_config_deployment(
                name=cfg.name, model=cfg.model, hardware=cfg.hardware, owner=cfg.owner,
                task=cfg.task, status=State.PENDING)
        dtypes = {cfg.name: cfg.dtype for cfg in self.config.deployments}
        for row in await self.store.list_deployments():
            dep = self._handle(row, dtypes.get(row.name, "auto"))
            self._deployments[dep.name] = dep
            if row.desired == "stopped":
                dep.desired_running = False
                await self._transition(dep, State.STOPPED, "stopped by a person; stays stopped")
            elif row.hardware not in self.config.tiers:
                await self._transition(dep, State.FAILED,
                                       f"hardware tier {row.hardware!r} is not in the config")
            else:
                try:
                    self.node.admit(dep.name, dep.tier)
                except InsufficientCapacity as e:
                    await self._transition(dep, State.FAILED, f"no capacity: {e}")
                    continue
                await self._transition(dep, State.PENDING, "server start")
                self._launch(dep)

    def _handle(self, row: DeploymentRow, dtype: str = "auto") -> Deployment:
        tier = self.config.tiers.get(row.hardware) or Tier(row.hardware, 1, 0, 0, Decimal(0))
        own = next((c for c in self.config.deployments
                    if c.name == row.name and row.source == "config"), None)
        return Deployment(
            id=row.id, name=row.name, model=row.model, tier=tier, owner=row.owner,
            task=Task(row.task) if row.task in set(Task) else None, dtype=dtype,
            created_at=row.created_at, source=row.source, currency=self.config.currency,
            restarts=row.restarts, oom_kills=row.oom_kills,
            # by id, not name: a Unix socket path must stay under 108 bytes
            socket_path=self.socket_dir / f"{row.id}.sock",
            log_path=self.log_dir / f"{row.name}.log",
            gate=Gate.from_config(row.name, self.config.limits, own))

    def _launch(self, dep: Deployment) -> None:
        if self._deployments.get(dep.name) is not dep or dep.deleting:
            raise LookupError(dep.name)  # deleted meanwhile: never start a ghost
        dep.desired_running = True
        dep.wake.clear()
        dep.run_task = asyncio.create_task(self._run(dep), name=f"supervise:{dep.name}")

    # --- lifecycle actions (admin API) -------------------------------------------------

    async def create(self, *, name: str, model: str, hardware: str, owner: str,
                     task: Task | None) -> Deployment:
        """A new deployment; its engine starts in the background. NameTaken if taken."""
        async with self._registry_lock:
            if name in self._deployments:
                raise NameTaken(name)
            self.node.admit(name, self.config.tiers[hardware])  # InsufficientCapacity
            try:
                row = await self.store.create_deployment(
                    name=name, model=model, hardware=hardware, owner=owner,
                    task=str(task) if task else None, status=State.PENDING)
            except BaseException:
                self.node.release(name)
                raise
            dep = self._handle(row)
            # Published with its lifecycle lock held: a stop or delete that finds it waits
            # until its run loop exists, so none can slip in between and leave a ghost.
            await dep.lock.acquire()
            self._deployments[name] = dep
        try:
            await self._transition(dep, State.PENDING, "created")
            self._launch(dep)
        finally:
            dep.lock.release()
        return dep

    async def stop(self, dep: Deployment, reason: str = "stopped by a person") -> None:
        """Stop the engine and keep it stopped, across server restarts too."""
        async with dep.lock:
            self._check_live(dep)
            await self.store.set_desired(dep.id, "stopped")
            await self._halt(dep, reason)
            self.node.release(dep.name)

    async def start_deployment(self, dep: Deployment) -> None:
        """Start a stopped or failed deployment (a no-op when it runs already)."""
        async with dep.lock:
            self._check_live(dep)
            await self._resume(dep, "started by a person")

    async def restart(self, dep: Deployment) -> None:
        async with dep.lock:
            self._check_live(dep)
            await self._halt(dep, "restart requested")
            await self._resume(dep, "restarted by a person")

    async def delete(self, dep: Deployment, drain_timeout_s: float) -> None:
        """Refuse new requests, let in-flight ones finish (up to the timeout), stop the
        engine, and forget the deployment. Its rows and events stay in the store."""
        async with dep.lock:
            self._check_live(dep)
            dep.deleting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dep.idle.wait(), drain_timeout_s)
            if dep.in_flight:
                log.warning("deleting %s with %d request(s) still in flight", dep.name,
                            dep.in_flight)
            await self._halt(dep, "deleted")
            self.node.release(dep.name)
            await self.store.mark_deleted(dep.id)
            async with self._registry_lock:
                self._deployments.pop(dep.name, None)

    def _check_live(self, dep: Deployment) -> None:
        if self._deployments.get(dep.name) is not dep:
            raise LookupError(dep.name)

    async def _halt(self, dep: Deployment, reason: str) -> None:
        self.request_stop(dep, reason)
        if dep.run_task is not None:
            await asyncio.shield(dep.run_task)
            dep.run_task = None
        if dep.state is not State.STOPPED:  # it was failed, or never started
            await self._transition(dep, State.STOPPED, reason)

    async def _resume(self, dep: Deployment, reason: str) -> None:
        if dep.run_task is not None and not dep.run_task.done():
            await self.store.set_desired(dep.id, "running")
            return
        self.node.admit(dep.name, dep.tier)  # InsufficientCapacity: stays as it was
        await self.store.set_desired(dep.id, "running")
        dep.crashes.clear()
        dep.retry_at = None
        await self._transition(dep, State.PENDING, reason)
        self._launch(dep)

    async def close(self) -> None:
        """Stop every engine (SIGTERM, then SIGKILL after the stop timeout) and wait."""
        for dep in self._deployments.values():
            self.request_stop(dep, "server shutdown")
        tasks = [d.run_task for d in self._deployments.values() if d.run_task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.slices.remove_parent)  # leave no empty cgroup behind

    def request_stop(self, dep: Deployment, reason: str) -> None:
        dep.desired_running = False
        dep.stop_reason = reason
        dep.wake.set()

    # --- the run loop of one deployment --------------------------------------------------

    async def _run(self, dep: Deployment) -> None:
        try:
            while dep.desired_running:
                if not await self._prepare(dep):
                    return
                ended = await self._attempt(dep)
                if not dep.desired_running:
                    break
                if not await self._after_crash(dep, ended):
                    return
            await self._transition(dep, State.STOPPED, dep.stop_reason, pid=dep.last_pid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("supervisor loop of %s failed", dep.name)
            with contextlib.suppress(Exception):
                await self._transition(dep, State.FAILED, "supervisor error (see server log)")

    async def _prepare(self, dep: Deployment) -> bool:
        """Checks that need no process; a failure here is permanent (`failed`)."""
        models_dir = self.config.server.models_dir
        entry = catalog.resolve(dep.model)
        if entry is not None and not entry.available:
            await self._transition(dep, State.FAILED, entry.unavailable_reason)
            return False
        folder = catalog.find_entry_weights(entry, models_dir) if entry else None
        if folder is None:
            try:
                folder = find_weights(dep.model, models_dir)
            except WeightsNotFound as e:
                await self._transition(dep, State.FAILED,
                                       f"weights not found: {e}; `berth pull {dep.model}"
                                       f" --models-dir {models_dir}`")
                return False
        task = dep.task or (entry.engine_task if entry else None) or infer_task(folder)
        if task is None:
            await self._transition(dep, State.FAILED,
                                   f"cannot tell which task {dep.model!r} serves; "
                                   "set `task` for this deployment in config.toml")
            return False
        dep.task = task
        dep.model_path = folder
        dep.trust_remote_code = bool(entry and entry.trust_remote_code)
        hold = self.node.holds.get(dep.name) or self.node.admit(dep.name, dep.tier)
        spec = SliceSpec(name=dep.name, cpus=dep.tier.cpus, memory_bytes=dep.tier.memory_bytes,
                         pids_max=self.config.node.pids_max, cores=hold.cores,
                         cores_shared=hold.shared, gpus=hold.gpus)
        try:
            dep.slice = await asyncio.to_thread(self.slices.create, spec)
        except SliceError as e:
            await self._transition(dep, State.FAILED, f"cannot make its slice: {e}")
            return False
        return True

    async def _attempt(self, dep: Deployment) -> str:
        """Run one engine process until it ends or a stop is asked; return why it ended."""
        assert dep.task is not None and dep.slice is not None
        server = self.config.server
        spec = EngineSpec(
            name=dep.name, task=dep.task, model=dep.model,
            model_path=str(dep.model_path),
            socket_path=str(dep.socket_path), dtype=dep.dtype, threads=dep.tier.cpus,
            trust_remote_code=dep.trust_remote_code,
            files_dir=str(self.config.server.state_dir / "files"),
            fetch_urls=server.fetch_image_urls, fetch_max_bytes=server.fetch_max_bytes,
            embedding_max_tokens=server.embedding_max_tokens,
            fetch_timeout_s=server.fetch_timeout_s)
        dep.socket_path.unlink(missing_ok=True)
        try:
            proc = await self.launcher.spawn(spec, dep.log_path,
                                             command_prefix=dep.slice.command_prefix,
                                             env=dep.slice.env)
        except OSError as e:
            await self._release(dep)
            return f"spawn failed: {e}"
        dep.process, dep.pid = proc, proc.pid
        dep.spawned_at = time.time()  # the meter bills from here to the reap
        await self._transition(dep, State.STARTING, "restart" if dep.restarts else "spawn")
        dep.usage = slice_meter(dep.slice, proc.pid)
        dep.client = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(dep.socket_path),
                                            limit=self.config.server.engine_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            base_url="http://engine")
        exited = asyncio.create_task(proc.wait(), name=f"wait:{dep.name}")
        try:
            why = await self._watch(dep, proc, exited)
            if not exited.done():
                await self._end_process(dep, proc, exited, why)
            return why
        finally:
            if not exited.done():  # cancelled: still leave no process behind
                proc.signal(signal.SIGKILL)
                await asyncio.shield(exited)
            await dep.client.close()
            await self._release(dep)

    async def _watch(self, dep: Deployment, proc: EngineProcess,
                     exited: asyncio.Task[int]) -> str:
        sup = self.config.supervisor
        deadline = time.monotonic() + sup.start_timeout_s
        misses = 0
        while True:
            interval = sup.health_interval_s if dep.state is State.READY else START_POLL_S
            woke = await self._pause(dep, exited, interval)
            if exited.done():
                return self._exit_reason(dep, exited.result())
            if woke and not dep.desired_running:
                return dep.stop_reason
            health = await self._probe(dep)
            if health is None:
                # While loading, imports can hold the engine's GIL for seconds: a slow
                # ping then is not a hang. Loading is bounded by the start timeout instead.
                misses += 1 if dep.state is State.READY else 0
                if misses >= sup.health_misses:
                    return f"health timeout ({misses} checks missed)"
                if dep.state is not State.READY and time.monotonic() > deadline:
                    return f"not ready after {sup.start_timeout_s:g} s (start timeout)"
                continue
            misses = 0
            dep.health = health
            state = health.get("state")
            if state == HealthState.LOADING and dep.state is State.STARTING:
                await self._transition(dep, State.LOADING, "engine answering, loading model")
            elif state == HealthState.READY and dep.state is not State.READY:
                dep.ready_at = time.time()
                await self._transition(dep, State.READY, "health ok")

    async def _pause(self, dep: Deployment, exited: asyncio.Task[int], seconds: float) -> bool:
        """Sleep until the process exits, the handle is woken, or the timeout; True if woken."""
        waker = asyncio.create_task(dep.wake.wait())
        try:
            await asyncio.wait({exited, waker}, timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
        if dep.wake.is_set():
            dep.wake.clear()
            return True
        return False

    async def _probe(self, dep: Deployment) -> dict[str, Any] | None:
        # The health ping has its own connection, never one of the inference pool:
        # a busy engine must not look dead.
        timeout = aiohttp.ClientTimeout(total=self.config.supervisor.health_timeout_s)
        try:
            connector = aiohttp.UnixConnector(path=str(dep.socket_path), force_close=True)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s, \
                    s.get(f"http://engine{HEALTH}") as resp:
                data = await resp.json()
                return data if isinstance(data, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
            return None

    def _exit_reason(self, dep: Deployment, returncode: int) -> str:
        usage = dep.slice.usage() if dep.slice is not None else None
        if usage is not None and usage.oom_kills > 0:
            # the kernel's own count for this slice, not a guess from the signal
            dep.oom_kills += usage.oom_kills
            return "oom_killed"
        if returncode == EXIT_JOIN_FAILED:
            return f"exit {returncode} (could not join its slice)"
        reason = describe_exit(returncode)
        detail = (dep.health or {}).get("detail")
        if returncode == EXIT_LOAD_FAILED and detail:
            reason = f"{reason}: {detail}"
        return reason

    async def _end_process(self, dep: Deployment, proc: EngineProcess,
                           exited: asyncio.Task[int], why: str) -> None:
        """SIGTERM, wait up to the stop timeout, then SIGKILL."""
        stopping = not dep.desired_running
        if stopping:
            await self._transition(dep, State.STOPPING, why)
            proc.signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited),
                                       self.config.supervisor.stop_timeout_s)
        if not exited.done():
            if stopping:
                log.warning("engine %s pid %s ignored SIGTERM; killing", dep.name, proc.pid)
            proc.signal(signal.SIGKILL)
            await exited
        log.info("engine %s pid %s ended: %s (%s)", dep.name, proc.pid, why,
                 describe_exit(exited.result()))

    async def _release(self, dep: Deployment) -> None:
        if dep.pid is not None and dep.spawned_at is not None:  # the meter bills its life
            self._ended.append(EngineLife(dep, dep.pid, dep.spawned_at, time.time()))
        dep.last_pid = dep.pid
        dep.process = None
        dep.usage = None
        dep.pid = None
        dep.health = None
        dep.socket_path.unlink(missing_ok=True)
        if dep.slice is not None:
            slice_, dep.slice = dep.slice, None
            try:  # it may wait for exiting tasks: off the event loop
                await asyncio.to_thread(slice_.remove)
            except (SliceError, OSError) as e:  # OSError: EMFILE under a connection flood
                # the next start of this deployment, or of the server, cleans it up
                log.error("could not remove the slice of %s: %s", dep.name, e)

    async def _after_crash(self, dep: Deployment, why: str) -> bool:
        """Record a crash and back off; False when the deployment has failed for good."""
        sup = self.config.supervisor
        now = time.monotonic()
        stable = dep.ready_at is not None and time.time() - dep.ready_at >= sup.stable_after_s
        if stable:
            dep.crashes.clear()
        dep.crashes.append(now)
        while dep.crashes and now - dep.crashes[0] > sup.crash_window_s:
            dep.crashes.popleft()
        dep.ready_at = None
        if len(dep.crashes) >= sup.crash_limit:
            await self._transition(
                dep, State.FAILED,
                f"{len(dep.crashes)} crashes within {sup.crash_window_s:g} s; last: {why}",
                pid=dep.last_pid)
            return False
        delay = min(sup.backoff_initial_s * 2 ** (len(dep.crashes) - 1), sup.backoff_max_s)
        dep.retry_at = time.time() + delay
        await self._transition(dep, State.CRASHED, why, pid=dep.last_pid)
        log.warning("engine %s crashed (%s); restarting in %.1f s", dep.name, why, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dep.wake.wait(), delay)
        dep.wake.clear()
        dep.retry_at = None
        if dep.desired_running:
            dep.restarts += 1
        return True

    # --- state changes --------------------------------------------------------------------

    async def _transition(self, dep: Deployment, state: State, reason: str | None, *,
                          pid: int | None = None) -> None:
        """Record a state change (event row first: whoever sees the new state in the API
        finds its event too). `pid` names the process of an event that outlived it."""
        pid = pid or dep.pid
        log.info("deployment %s: %s -> %s (%s) pid %s", dep.name, dep.state, state, reason,
                 pid)
        await self.store.record_transition(
            dep.id, status=state, reason=reason, pid=dep.pid, event_pid=pid,
            restarts=dep.restarts, ready_at=dep.ready_at, at=time.time(),
            oom_kills=dep.oom_kills)
        dep.state, dep.reason = state, reason
        if state is State.FAILED:
            self.node.release(dep.name)  # gave up: its share goes back to the node
