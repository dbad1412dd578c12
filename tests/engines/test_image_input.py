"""Image parts into PIL images: data URLs, refused schemes and addresses, size limits.

The fetch tests run a real aiohttp server on 127.0.0.1. Loopback is refused by the
default address policy (that is the point of the first tests); the tests of the
fetching itself (size, redirects, timeouts) pass a policy that allows exactly
127.0.0.1, the way a deployment allows the public internet.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import struct
import zlib
from urllib.parse import quote_from_bytes

import pytest
from aiohttp import web
from PIL import Image

from engines.base import RequestError
from engines.image_input import (
    DECODE_BYTES_PER_PIXEL,
    DECODE_SHARE,
    MAX_PIXELS,
    MIN_PIXELS,
    ImageLimits,
    ImageReader,
    PixelGate,
    decode_data_url,
    load_image,
    open_image,
    pixel_budget,
    refuse_non_public,
)
from engines.memory import MEMORY_LIMIT_ENV, memory_limit_bytes
from engines.protocol import EngineSpec, Task

PARAM = "messages.0.content.1.image_url.url"
FETCHING = ImageLimits(fetch_urls=True, timeout_s=5.0)
DEFAULTS = ImageLimits()


def png(width: int = 20, height: int = 10, mode: str = "RGB") -> bytes:
    color = {"RGB": (200, 30, 10), "RGBA": (1, 2, 3, 128), "L": 90, "P": 3}[mode]
    out = io.BytesIO()
    Image.new(mode, (width, height), color).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def only_localhost(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    return None if str(ip) == "127.0.0.1" else "not 127.0.0.1"


async def refused(url: str, limits: ImageLimits = DEFAULTS, **kw) -> RequestError:
    with pytest.raises(RequestError) as info:
        await load_image(url, PARAM, limits, **kw)
    assert info.value.param == PARAM
    assert PARAM in info.value.message
    return info.value


# --- data URLs -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
async def test_a_png_data_url_becomes_an_rgb_image(mode) -> None:
    image = await load_image(data_url(png(20, 10, mode)), PARAM, ImageLimits())
    assert image.mode == "RGB" and image.size == (20, 10)


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    out = io.BytesIO()
    grey = Image.new("I;16", (4, 2), 65535)
    grey.putpixel((0, 0), 32768)
    grey.save(out, format="PNG")
    image = open_image(out.getvalue(), PARAM)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (128, 128, 128)
    assert image.getpixel((1, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                                      ("WEBP", "image/webp"), ("BMP", "image/bmp")])
async def test_other_formats(fmt, mime) -> None:
    out = io.BytesIO()
    Image.new("RGB", (16, 8), (9, 99, 199)).save(out, format=fmt)
    image = await load_image(data_url(out.getvalue(), mime), PARAM, ImageLimits())
    assert image.mode == "RGB" and image.size == (16, 8)


async def test_data_url_spellings() -> None:
    raw = png()
    encoded = base64.b64encode(raw).decode()
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    variants = [
        f"DATA:IMAGE/PNG;BASE64,{encoded}",
        f"data:image/png;base64,{wrapped}",  # MIME line breaks
        f"data:image/png;charset=binary;base64,{encoded}",
        f"data:image/png;base64,{base64.urlsafe_b64encode(raw).decode()}",
        f"data:image/png,{quote_from_bytes(raw)}",  # percent-encoded, not base64
    ]
    for url in variants:
        image = await load_image(url, PARAM, ImageLimits())
        assert image.size == (20, 10), url[:40]


async def test_truncated_base64_is_400() -> None:
    url = data_url(png(64, 64))
    err = await refused(url[: len(url) // 2 + 1])  # cut mid-quantum: bad padding
    assert err.status == 400 and err.code == "invalid_image"


async def test_truncated_image_is_400() -> None:
    raw = png(64, 64)
    cut = raw[: len(raw) // 2 // 3 * 3]  # valid base64 of half a PNG
    err = await refused(data_url(cut))
    assert err.status == 400 and err.code == "invalid_image"


@pytest.mark.parametrize("data", [b"hello, not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                                  b"GIF89a"])
async def test_non_image_bytes_are_400(data) -> None:
    err = await refused(data_url(data))
    assert err.status == 400 and err.code == "invalid_image"
    # the user reads what is wrong, not Python's insides ("<_io.BytesIO object at 0x..>")
    assert "object at 0x" not in err.message and "BytesIO" not in err.message


@pytest.mark.parametrize("url", [
    "data:text/plain;base64,aGVsbG8=",
    "data:;base64,aGVsbG8=",
    "data:image/png;base64",  # no comma, no data
    "data:image/png;base64,",
    "data:image/png;base64,!!!!",
])
async def test_malformed_data_urls_are_400(url) -> None:
    err = await refused(url)
    assert err.status == 400


# --- schemes -----------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["file:///etc/passwd", "FILE:///etc/hostname",
                                 "ftp://example.com/cat.png", "gopher://x/", "/etc/passwd",
                                 "cat.png"])
async def test_other_schemes_are_400(url) -> None:
    err = await refused(url, FETCHING)
    assert err.status == 400 and err.code == "invalid_image_url"


async def test_fetch_disabled_says_how_to_enable() -> None:
    err = await refused("https://example.com/cat.png", ImageLimits(fetch_urls=False))
    assert err.status == 400 and err.code == "image_url_fetch_disabled"
    assert "fetch_image_urls = true" in err.message and "data:" in err.message


def test_limits_come_from_the_spec() -> None:
    spec = EngineSpec(name="v", task=Task.CAPTION, model="m", model_path="/m", socket_path="/s",
                      fetch_urls=True, fetch_max_bytes=1234, fetch_timeout_s=2.5)
    assert ImageLimits.from_spec(spec) == ImageLimits(max_bytes=1234, fetch_urls=True,
                                                      timeout_s=2.5)
    micro = ImageLimits.from_spec(spec, memory_limit=2 * 1024**3)
    assert micro.max_pixels == pixel_budget(2 * 1024**3) < MAX_PIXELS


def test_the_pixel_budget_follows_the_memory_limit() -> None:
    gib = 1024**3
    assert pixel_budget(None) == MAX_PIXELS  # no limit known: the fixed ceiling
    micro = pixel_budget(2 * gib)
    # a 2 GiB tier: an eighth of it, at 20 bytes a pixel: ~13 Mpx (a 12 Mpx phone photo
    # fits), not 50 (four 50 Mpx photos decoded at once OOM-killed BLIP on micro)
    assert micro == 2 * gib // DECODE_SHARE // DECODE_BYTES_PER_PIXEL
    assert 12_000_000 < micro < 15_000_000
    assert micro * DECODE_BYTES_PER_PIXEL <= 2 * gib // DECODE_SHARE
    assert pixel_budget(64 * gib) == MAX_PIXELS
    assert pixel_budget(64 * 1024**2) == MIN_PIXELS


# --- addresses ----------------------------------------------------------------------------

@pytest.mark.parametrize("addr,public", [
    ("127.0.0.1", False), ("127.8.9.10", False), ("::1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False),
    ("fe80::1", False), ("fc00::1", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("::", False), ("224.0.0.1", False), ("240.0.0.1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:10.0.0.1", False), ("192.0.2.1", False),
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700:4700::1111", True),
])
def test_only_public_addresses_pass(addr, public) -> None:
    assert (refuse_non_public(ipaddress.ip_address(addr)) is None) is public


@pytest.mark.parametrize("addr,why", [
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("10.1.2.3", "a private address"), ("127.0.0.1", "a loopback address"),
    ("0.0.0.0", "an unspecified address"), ("::ffff:127.0.0.1", "a loopback address"),
])
def test_a_refused_address_is_named_by_its_narrowest_kind(addr, why) -> None:
    assert refuse_non_public(ipaddress.ip_address(addr)) == why


@pytest.fixture
async def image_server(aiohttp_server):
    """A real HTTP server on 127.0.0.1 that serves a PNG, and some bad answers."""
    picture = png(12, 6)

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=picture, content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"\0" * 4096, content_type="image/png")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the reader must count
        await resp.prepare(request)
        for _ in range(8):
            await resp.write(b"\0" * 1024)
        return resp

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=picture)

    app = web.Application()
    app.add_routes([web.get("/cat.png", image), web.get("/big", big),
                    web.get("/chunked", chunked), web.get("/redirect", redirect),
                    web.get("/missing", missing), web.get("/slow", slow)])
    return await aiohttp_server(app, host="127.0.0.1")


async def test_loopback_is_refused_even_though_it_answers(image_server) -> None:
    port = image_server.port
    for host in ("127.0.0.1", "localhost"):
        err = await refused(f"http://{host}:{port}/cat.png", FETCHING)
        assert err.status == 400 and err.code == "image_url_refused"
        assert "loopback" in err.message


@pytest.mark.parametrize("url", ["http://10.0.0.1/x.png", "http://169.254.169.254/latest",
                                 "http://[::1]/x.png", "https://192.168.0.10/x.png",
                                 "http://0.0.0.0/x.png"])
async def test_private_addresses_are_refused_before_connecting(url) -> None:
    err = await refused(url, FETCHING)
    assert err.status == 400 and err.code == "image_url_refused"


async def test_fetch_from_an_allowed_address(image_server) -> None:
    url = f"http://127.0.0.1:{image_server.port}/cat.png"
    image = await load_image(url, PARAM, FETCHING, policy=only_localhost)
    assert image.size == (12, 6) and image.mode == "RGB"


async def test_a_redirect_to_a_refused_address_is_refused(image_server) -> None:
    port = image_server.port
    ok = f"http://127.0.0.1:{port}/redirect?to=/cat.png"
    assert (await load_image(ok, PARAM, FETCHING, policy=only_localhost)).size == (12, 6)
    url = f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.2:{port}/cat.png"
    err = await refused(url, FETCHING, policy=only_localhost)
    assert err.code == "image_url_refused", err.message
    err = await refused(f"http://127.0.0.1:{port}/redirect?to=file:///etc/passwd", FETCHING,
                        policy=only_localhost)
    assert err.code == "invalid_image_url"


async def test_fetch_size_limit_is_413(image_server) -> None:
    small = ImageLimits(max_bytes=2048, fetch_urls=True, timeout_s=5.0)
    for path in ("/big", "/chunked"):
        err = await refused(f"http://127.0.0.1:{image_server.port}{path}", small,
                            policy=only_localhost)
        assert err.status == 413 and err.code == "image_too_large"


async def test_fetch_errors_are_400(image_server) -> None:
    port = image_server.port
    err = await refused(f"http://127.0.0.1:{port}/missing", FETCHING, policy=only_localhost)
    assert err.status == 400 and err.code == "image_fetch_failed" and "404" in err.message
    quick = ImageLimits(fetch_urls=True, timeout_s=0.2)
    err = await refused(f"http://127.0.0.1:{port}/slow", quick, policy=only_localhost)
    assert err.status == 400 and err.code == "image_fetch_timeout"
    err = await refused("http://no-such-host.invalid/x.png", FETCHING)
    assert err.status == 400 and err.code == "image_fetch_failed"


# --- limits ---------------------------------------------------------------------------------

def test_data_url_size_limit_is_413() -> None:
    url = data_url(png(64, 64))
    with pytest.raises(RequestError) as info:
        decode_data_url(url, PARAM, max_bytes=100)
    assert info.value.status == 413 and info.value.param == PARAM


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = binascii.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [8000, 30000])  # 64 Mpx over our limit; 900 Mpx over PIL's
async def test_decompression_bombs_are_413(side) -> None:
    err = await refused(data_url(_png_header_only(side, side)))
    assert err.status == 413 and err.code == "image_too_large"


def test_pixel_limit() -> None:
    with pytest.raises(RequestError) as info:
        open_image(png(100, 100), PARAM, max_pixels=5000)
    assert info.value.status == 413
    assert "100x100" in info.value.message and "at most 5000 pixels" in info.value.message
    assert open_image(png(50, 100), PARAM, max_pixels=5000).size == (50, 100)


@pytest.mark.parametrize("width,height,shown", [
    (6000, 5000, "is 6000x5000 pixels"),  # over the budget: refused by us, with its size
    (20000, 20000, "has far too many pixels"),  # over PIL's bomb limit: PIL refuses first
])
def test_the_size_is_refused_before_any_pixel_is_decoded(width, height, shown) -> None:
    # a header over a few bytes of pixel data: decoding it would fail (truncated, a 400),
    # so a 413 shows the header alone decided
    with pytest.raises(RequestError) as info:
        open_image(_png_header_only(width, height), PARAM, max_pixels=10_000_000)
    assert info.value.status == 413 and info.value.code == "image_too_large"
    assert info.value.param == PARAM
    assert shown in info.value.message
    assert "at most 10000000 pixels (10 megapixels)" in info.value.message


async def test_a_reader_holds_images_against_its_budget() -> None:
    reader = ImageReader(ImageLimits(max_pixels=5000))
    async with reader.open(data_url(png(50, 60)), PARAM) as image:
        assert image.mode == "RGB" and image.size == (50, 60)
        assert reader.gate.used == 3000
    assert reader.gate.used == 0 and reader.gate.peak == 3000
    with pytest.raises(RequestError) as info:
        async with reader.open(data_url(png(100, 60)), PARAM):
            pass
    assert info.value.status == 413 and reader.gate.used == 0
    with pytest.raises(RequestError):  # a bad image gives back what it held
        async with reader.open(data_url(png(64, 64)[:60]), PARAM):
            pass
    assert reader.gate.used == 0


async def test_the_gate_lets_images_in_while_they_fit_together() -> None:
    gate = PixelGate(100)
    order: list[str] = []

    async def use(name: str, pixels: int, release: asyncio.Event) -> None:
        async with gate.hold(pixels):
            order.append(name)
            await release.wait()

    first, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(use("a", 60, first))
    b = asyncio.create_task(use("b", 60, second))  # 120 > 100: waits for a
    c = asyncio.create_task(use("c", 30, third))  # would fit beside a, but b is first in line
    await asyncio.sleep(0.01)
    assert order == ["a"] and gate.used == 60
    first.set()
    await asyncio.sleep(0.01)
    assert order == ["a", "b", "c"] and gate.used == 90
    second.set()
    third.set()
    await asyncio.gather(a, b, c)
    assert gate.used == 0 and gate.peak == 90


async def test_a_cancelled_wait_holds_nothing() -> None:
    gate = PixelGate(100)
    release = asyncio.Event()

    async def hold(pixels: int) -> None:
        async with gate.hold(pixels):
            await release.wait()

    big = asyncio.create_task(hold(80))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold(50))
    small = asyncio.create_task(hold(10))  # behind `waiting` in line
    await asyncio.sleep(0.01)
    assert gate.used == 80
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert waiting.cancelled() and gate.used == 90  # the next in line went in
    release.set()
    await asyncio.gather(big, small)
    assert gate.used == 0


# --- the engine's memory limit --------------------------------------------------------------

def _cgroup_tree(tmp_path, proc: str, files: dict[str, str]):
    (tmp_path / "cgroup").write_text(proc)
    for rel, text in files.items():
        path = tmp_path / "fs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "cgroup"), str(tmp_path / "fs")


def test_memory_limit_from_cgroup_v1(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    proc, root = _cgroup_tree(tmp_path, "12:pids:/x\n4:memory:/berth/dep1\n0::/\n", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",  # the root: no limit
        "memory/berth/memory.limit_in_bytes": "8589934592\n",
        "memory/berth/dep1/memory.limit_in_bytes": "2147483648\n",
    })
    assert memory_limit_bytes(proc, root) == 2 * 1024**3


def test_memory_limit_from_cgroup_v2_and_its_parents(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    proc, root = _cgroup_tree(tmp_path, "0::/berth.slice/dep1\n", {
        "berth.slice/memory.max": "1073741824\n",  # the parent is tighter
        "berth.slice/dep1/memory.max": "2147483648\n",
    })
    assert memory_limit_bytes(proc, root) == 1024**3
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    proc, root = _cgroup_tree(unlimited, "0::/a\n", {"a/memory.max": "max\n"})
    assert memory_limit_bytes(proc, root) is None
    assert memory_limit_bytes(str(tmp_path / "missing"), root) is None


def test_the_environment_overrides_the_cgroup(tmp_path, monkeypatch) -> None:
    proc, root = _cgroup_tree(tmp_path, "0::/a\n", {"a/memory.max": "1073741824\n"})
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "536870912")
    assert memory_limit_bytes(proc, root) == 512 * 1024**2
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")  # not a number: the cgroup's
    assert memory_limit_bytes(proc, root) == 1024**3
