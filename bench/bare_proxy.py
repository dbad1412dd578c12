"""The floor for any aiohttp proxy on this machine: TCP in, the engine's Unix socket out,
no validation, no routing. `router_overhead.py` runs it beside berth for comparison.

    python bench/bare_proxy.py ENGINE_SOCKET PORT
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import web


async def serve(sock: str, port: int) -> None:
    client = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock, limit=64))

    async def proxy(request: web.Request) -> web.Response:
        raw = await request.read()
        async with client.post("http://engine/v1/completions", data=raw,
                               headers={"Content-Type": "application/json"}) as up:
            body = await up.read()
        return web.Response(body=body, status=up.status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/completions", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(serve(sys.argv[1], int(sys.argv[2])))
    except ImportError:
        asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
