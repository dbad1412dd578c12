"""What the router adds: a one-token completion through `berth serve` versus straight to
the engine's Unix socket, same load, one run.

    .venv/bin/python bench/router_overhead.py [--requests 400] [--concurrency 16]

Starts its own `berth serve` (temp state dir, the tiny demo chat model from models/ or
built on the fly), measures, prints a table, and stops the server.
Targets (issue 2): <= 0.3 ms added at p50 with one client; >= 95% of the direct
throughput with 16 concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import CHAT_MODEL, free_port  # noqa: E402
from tests.helpers import ADMIN_TOKEN, AUTH, write_config  # noqa: E402

BODY = {"model": "chat", "prompt": "hi", "max_tokens": 1, "temperature": 0}


def models_dir() -> Path:
    default = ROOT / "models"
    if (default / CHAT_MODEL / "config.json").is_file():
        return default
    from engines.prepare import build_tiny_chat_model

    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-models-"))
    build_tiny_chat_model(tmp / CHAT_MODEL)
    return tmp


async def one(session: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    async with session.post(url, json=BODY) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
    return time.perf_counter() - t0


async def sequential(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    return [await one(session, url) for _ in range(n)]


async def concurrent(session: aiohttp.ClientSession, url: str, n: int,
                     clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latencies.append(await one(session, url))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return n / (time.perf_counter() - t0), latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0


async def measure(port: int, bare_port: int, sock: Path, n: int, clients: int) -> None:
    tcp = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), headers=AUTH)
    uds = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock), limit=clients))
    paths = {
        "direct": (uds, "http://engine/v1/completions"),
        "router": (tcp, f"http://127.0.0.1:{port}/v1/completions"),
        "bare": (tcp, f"http://127.0.0.1:{bare_port}/v1/completions"),
    }
    async with tcp, uds:
        for s, u in paths.values():  # warm up every path
            await sequential(s, u, 20)
        lat: dict[str, list[float]] = {name: [] for name in paths}
        # alternate small blocks so drift on a shared machine hits every path alike
        for _ in range(max(1, n // 50)):
            for name, (s, u) in paths.items():
                lat[name] += await sequential(s, u, 50)
        thr: dict[str, float] = {}
        for _ in range(2):
            for name, (s, u) in paths.items():
                rps, _ = await concurrent(s, u, n, clients)
                thr[name] = max(thr.get(name, 0.0), rps)

    print(f"\none-token completion, tiny demo model, {n} requests per cell\n")
    print(f"{'path':<8} {'p50 ms (1 client)':>18} {'p99 ms (1 client)':>18} "
          f"{f'req/s ({clients} clients)':>20}")
    for name in paths:
        print(f"{name:<8} {pct(lat[name], 50):>18.3f} {pct(lat[name], 99):>18.3f} "
              f"{thr[name]:>20.1f}")
    print("(bare = a minimal aiohttp proxy, TCP in and Unix socket out, no validation: the\n"
          " floor for any aiohttp proxy process on this machine)")
    added = pct(lat["router"], 50) - pct(lat["direct"], 50)
    bare = pct(lat["bare"], 50) - pct(lat["direct"], 50)
    ratio = thr["router"] / thr["direct"]
    print(f"\nbare proxy adds at p50: {bare:.3f} ms; berth's router minus bare: "
          f"{added - bare:.3f} ms")
    print(f"\nadded at p50: {added:.3f} ms (target <= 0.3 ms: "
          f"{'met' if added <= 0.3 else 'NOT met'})")
    print(f"throughput router/direct: {ratio:.3f} (target >= 0.95: "
          f"{'met' if ratio >= 0.95 else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="berth-bench-", dir="/tmp"))
    port = free_port()
    config = write_config(work / "config.toml", state_dir=work / "state",
                          models_dir=models_dir(), port=port,
                          deployments=[{"name": "chat", "model": CHAT_MODEL,
                                        "hardware": "micro"}])
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--config",
                             str(config), "--log-level", "WARNING"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "BERTH_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        deadline = time.monotonic() + 120
        sock = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{port}/api/deployments/chat", headers=AUTH)) as r:
                    if json.load(r)["status"] == "ready":
                        sock = next((work / "state" / "run").glob("*.sock"))
                        break
            except OSError:
                pass
            time.sleep(0.2)
        if sock is None:
            print(f"server did not become ready; see {work / 'server.log'}", file=sys.stderr)
            return 1
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_proxy.py"),
                                 str(sock), str(bare_port)])
        try:
            time.sleep(1.5)
            asyncio.run(measure(port, bare_port, sock, args.requests, args.concurrency))
        finally:
            bare.terminate()
            bare.wait(10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
