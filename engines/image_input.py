"""Image parts of a chat request (`image_url.url`) turned into PIL images, safely.

- `data:image/<type>;base64,<data>` (or percent-encoded data) is always accepted.
- `http(s)://` is fetched only where the server allows it (`spec.fetch_urls`), and then
  only from public addresses: the host is resolved first, every address it resolves to
  must be public (not loopback, private, link-local, shared, reserved, multicast or
  unspecified), and the connection goes to exactly the addresses that were checked (no
  second lookup a DNS rebinding could answer differently). Redirects are followed by
  hand, each hop checked the same way. The body may be `spec.fetch_max_bytes` long and
  the whole fetch may take `spec.fetch_timeout_s`.
- Anything else (`file://`, `ftp://`, ...) is refused.

Bytes become an image only if PIL reads them whole: truncated or non-image bytes are a
400 naming the part (`messages.0.content.1.image_url.url`); more bytes than the limit,
or more pixels than the engine's pixel budget (a decompression bomb, or just a photo
too big for the tier), are a 413 that names the limit. The dimensions are read from
the image's header before a single pixel is decoded.

Decoded pixels cost memory (about `DECODE_BYTES_PER_PIXEL` bytes each at the peak of
decoding, converting to RGB and the model's preprocessing): an engine lets decoded
images take `1/DECODE_SHARE` of its memory limit (`engines.memory`), all requests
together. `ImageReader` holds each request's image against that budget from before its
decoding until the request is done, so concurrent requests with large images wait for
each other instead of multiplying the peak (and an engine on a 2 GiB tier is not
OOM-killed by four 50-megapixel photos).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import io
import ipaddress
import logging
import socket
import struct
import warnings
from base64 import b64decode
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image
from yarl import URL

from engines.base import RequestError
from engines.protocol import EngineSpec

log = logging.getLogger(__name__)

# 50 megapixels: an 8000x6000 photo; 150 MB once decoded to RGB. The most any engine
# accepts, however much memory it has.
MAX_PIXELS = 50_000_000
# The least an engine with a small memory limit still accepts (a 1000x1000 image).
MIN_PIXELS = 1_000_000
# Memory per pixel of an image in flight: PIL keeps RGB in 4 bytes a pixel, the decoded
# file and its RGB copy live together for a moment (8), the model's processor makes its
# own arrays (6 more), and the allocator does not hand every byte back at once. Measured:
# a tiny BLIP engine in a 2 GiB cgroup grew ~21 bytes per pixel at the peak, for 25 Mpx
# images decoded one at a time.
DECODE_BYTES_PER_PIXEL = 20
# Decoded images may take this fraction (1/8) of the engine's memory limit, together.
DECODE_SHARE = 8
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
ENABLE_HINT = (
    "send the image inline as a data: URL (data:image/png;base64,...), or let the server "
    "fetch image URLs: set `fetch_image_urls = true` under [server] in config.toml"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], str | None]


def pixel_budget(memory_limit: int | None) -> int:
    """The pixels an engine with `memory_limit` bytes (None: unknown) may hold decoded,
    all requests together; one image may have at most this many."""
    if memory_limit is None:
        return MAX_PIXELS
    share = memory_limit // DECODE_SHARE // DECODE_BYTES_PER_PIXEL
    return max(MIN_PIXELS, min(MAX_PIXELS, share))


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    fetch_urls: bool = False
    timeout_s: float = 10.0

    @classmethod
    def from_spec(cls, spec: EngineSpec, memory_limit: int | None = None) -> ImageLimits:
        return cls(max_bytes=spec.fetch_max_bytes, max_pixels=pixel_budget(memory_limit),
                   fetch_urls=spec.fetch_urls, timeout_s=spec.fetch_timeout_s)


class PixelGate:
    """Lets images be held decoded while their pixels together fit `budget`; first come,
    first served (a large image is not starved by a stream of small ones)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.peak = 0  # the most pixels ever held at once (tests read it)
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(pixels, self.budget)  # larger images are refused before they get here
        await self._acquire(pixels)
        try:
            yield
        finally:
            self._release(pixels)

    async def _acquire(self, pixels: int) -> None:
        if not self._waiting and self.used + pixels <= self.budget:
            self._take(pixels)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pixels, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted, then cancelled
                self._release(pixels)
            else:
                self._waiting.remove(entry)
                self._grant()  # the next in line may fit now
            raise

    def _take(self, pixels: int) -> None:
        self.used += pixels
        self.peak = max(self.peak, self.used)

    def _release(self, pixels: int) -> None:
        self.used -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.budget:
            pixels, granted = self._waiting.popleft()
            if not granted.done():
                self._take(pixels)
                granted.set_result(None)


class ImageReader:
    """An engine's way to read image parts: within its limits, and its pixel budget."""

    def __init__(self, limits: ImageLimits, *,
                 policy: AddressPolicy | None = None) -> None:
        self.limits = limits
        self.policy = policy or refuse_non_public
        self.gate = PixelGate(limits.max_pixels)
        log.info("images: at most %d pixels each, and decoded together", limits.max_pixels)

    @contextlib.asynccontextmanager
    async def open(self, url: str, param: str) -> AsyncIterator[Image.Image]:
        """The RGB image of `url`, held against the budget until the block ends."""
        data = await image_bytes(url, param, self.limits, policy=self.policy)
        lazy = await asyncio.to_thread(probe_image, data, param, self.limits.max_pixels)
        width, height = lazy.size
        try:
            async with self.gate.hold(width * height):
                # not closed at the end: a producer abandoned by its client may still
                # be reading it on the worker thread; memory goes with the last reference
                yield await asyncio.to_thread(decode_image, lazy, param)
        finally:
            lazy.close()


def refuse_non_public(ip: IPAddress) -> str | None:
    """Why `ip` may not be fetched from (None: it is a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # the narrowest name first: 169.254/16 and fe80::/10 are "private" to Python too
    for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}"):
            name = kind.replace("_", "-")
            return f"{'an' if name[0] in 'aeiou' else 'a'} {name} address"
    if not ip.is_global:
        return "not a public address"
    return None


async def load_image(url: str, param: str, limits: ImageLimits, *,
                     policy: AddressPolicy = refuse_non_public) -> Image.Image:
    """The RGB image an `image_url.url` names; RequestError (400/413) naming `param`.
    (Not held against a budget: engines read images through `ImageReader`.)"""
    data = await image_bytes(url, param, limits, policy=policy)
    return await asyncio.to_thread(open_image, data, param, limits.max_pixels)


async def image_bytes(url: str, param: str, limits: ImageLimits, *,
                      policy: AddressPolicy = refuse_non_public) -> bytes:
    """The encoded bytes an `image_url.url` names: a data: URL's, or fetched."""
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme == "data":  # base64 of up to max_bytes: decoded off the loop
        return await asyncio.to_thread(decode_data_url, url, param, limits.max_bytes)
    if scheme in ("http", "https"):
        return await fetch_image_bytes(url, param, limits, policy=policy)
    shown = f"{scheme}: URLs are" if scheme else "a URL without a scheme is"
    raise RequestError(400, f"{param}: {shown} not accepted; send a data: URL "
                            "(data:image/png;base64,...) or an http(s) URL",
                       param=param, code="invalid_image_url")


def decode_data_url(url: str, param: str, max_bytes: int) -> bytes:
    """The bytes of a `data:image/...` URL (base64 or percent-encoded)."""
    header, comma, payload = url[len("data:"):].partition(",")
    if not comma:
        raise RequestError(400, f"{param}: a data URL needs a ',' before its data",
                           param=param, code="invalid_image_url")
    mime, *params = [p.strip().lower() for p in header.split(";")]
    if not mime.startswith("image/"):
        raise RequestError(
            400, f"{param}: the data URL's type is {mime or 'missing'!r}; an image/* type "
                 "is expected (data:image/png;base64,...)", param=param, code="invalid_image")
    if "base64" in params:
        encoded = "".join(payload.split()).replace("-", "+").replace("_", "/")
        if len(encoded) // 4 * 3 > max_bytes:
            raise _too_large(param, max_bytes)
        try:
            data = b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"{param}: the data URL is not valid base64 ({exc})",
                               param=param, code="invalid_image") from exc
    else:
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    if not data:
        raise RequestError(400, f"{param}: the data URL holds no data", param=param,
                           code="invalid_image")
    return data


def open_image(data: bytes, param: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decodes image bytes fully into an RGB image (blocking: run it off the loop)."""
    return decode_image(probe_image(data, param, max_pixels), param)


def probe_image(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """The image, opened but not decoded (PIL reads the header only), if its dimensions
    are within `max_pixels`; RequestError 413 naming the limit, or 400 (not an image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refuses (far) more than MAX_IMAGE_PIXELS itself, before we see the size
        raise _too_many_pixels(param, None, max_pixels) from exc
    except Image.UnidentifiedImageError as exc:
        raise RequestError(
            400, f"{param}: the data is not an image in a format this engine reads "
                 "(PNG, JPEG, WebP, GIF, BMP, TIFF, ...)", param=param,
            code="invalid_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise _unreadable(param) from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _too_many_pixels(param, (width, height), max_pixels)
    if width < 1 or height < 1:
        image.close()
        raise RequestError(400, f"{param}: the image is {width}x{height} pixels: empty",
                           param=param, code="invalid_image")
    return image


def decode_image(image: Image.Image, param: str) -> Image.Image:
    """Every pixel of an image `probe_image` opened, as a new RGB image (blocking); the
    opened one is closed (its pixels freed) on the way."""
    try:
        image.load()  # reads every pixel: a truncated file fails here
        source = image
        if image.mode.startswith("I;16"):  # 16-bit grey: RGB would clip at 255, not scale
            source = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
        return source.convert("RGB")
    except MemoryError as exc:
        raise RequestError(413, f"{param}: the engine has not enough memory to decode this "
                                f"{image.width}x{image.height} image", param=param,
                           code="image_too_large") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # SyntaxError is PIL's "broken file"
        raise _unreadable(param) from exc
    finally:
        image.close()


def _too_many_pixels(param: str, size: tuple[int, int] | None, max_pixels: int) -> RequestError:
    shown = f"is {size[0]}x{size[1]} pixels" if size else "has far too many pixels"
    return RequestError(
        413, f"{param}: the image {shown}; this deployment accepts images of at most "
             f"{max_pixels} pixels ({_megapixels(max_pixels)} megapixels): send a smaller one",
        param=param, code="image_too_large")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".removesuffix(".0")


def _unreadable(param: str) -> RequestError:
    return RequestError(400, f"{param}: the image data is truncated or corrupt", param=param,
                        code="invalid_image")


# --- http(s) ------------------------------------------------------------------------------

class _PinnedResolver(AbstractResolver):
    """Answers only with the addresses `fetch_image_bytes` checked for each host."""

    def __init__(self) -> None:
        self.pinned: dict[str, list[tuple[int, str]]] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = self.pinned.get(host)
        if not addresses:
            raise OSError(f"{host} was not checked before connecting")
        return [ResolveResult(hostname=host, host=addr, port=port, family=fam, proto=0,
                              flags=socket.AI_NUMERICHOST) for fam, addr in addresses]

    async def close(self) -> None:
        return None


async def fetch_image_bytes(url: str, param: str, limits: ImageLimits, *,
                            policy: AddressPolicy = refuse_non_public) -> bytes:
    """GETs an http(s) image from a public address, within the size and time limits."""
    if not limits.fetch_urls:
        raise RequestError(400, f"{param}: this server does not fetch image URLs; {ENABLE_HINT}",
                           param=param, code="image_url_fetch_disabled")
    target = _parse_http_url(url, param)
    resolver = _PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=1)
    timeout = aiohttp.ClientTimeout(total=limits.timeout_s)
    try:
        async with asyncio.timeout(limits.timeout_s), aiohttp.ClientSession(
                connector=connector, timeout=timeout, trust_env=False) as session:
            for _ in range(MAX_REDIRECTS + 1):
                await _check_host(target, param, resolver, policy)
                async with session.get(target, allow_redirects=False,
                                       headers={"Accept": "image/*"}) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        target = _parse_http_url(str(target.join(URL(resp.headers["Location"]))),
                                                 param)
                        continue
                    if resp.status != 200:
                        raise _fetch_failed(param, f"{target.host} answered HTTP {resp.status}")
                    return await _read_limited(resp, param, limits.max_bytes)
            raise _fetch_failed(param, f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError as exc:
        raise RequestError(400, f"{param}: fetching the image took longer than "
                                f"{limits.timeout_s:g} s", param=param,
                           code="image_fetch_timeout") from exc
    except aiohttp.ClientError as exc:
        raise _fetch_failed(param, str(exc) or "the connection failed") from exc


def _parse_http_url(url: str, param: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise RequestError(400, f"{param}: not a valid URL ({exc})", param=param,
                           code="invalid_image_url") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise RequestError(400, f"{param}: only http(s) URLs with a host are fetched; "
                                f"not {url[:100]!r}", param=param, code="invalid_image_url")
    return parsed


async def _check_host(target: URL, param: str, resolver: _PinnedResolver,
                      policy: AddressPolicy) -> None:
    host = target.raw_host or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    addresses: list[tuple[int, str]]
    if literal is not None:  # aiohttp connects to an IP literal without asking a resolver
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        addresses = [(int(family), str(literal))]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise _fetch_failed(param, f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys((int(fam), str(sa[0])) for fam, _, _, _, sa in infos))
    for _, addr in addresses:
        why = policy(ipaddress.ip_address(addr.partition("%")[0]))
        if why is not None:
            raise RequestError(
                400, f"{param}: refused to fetch from {host}: {addr} is {why}; images are "
                     "fetched from public addresses only", param=param, code="image_url_refused")
    resolver.pinned[host] = addresses


async def _read_limited(resp: aiohttp.ClientResponse, param: str, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise _too_large(param, max_bytes)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(param, max_bytes)
    return bytes(body)


def _too_large(param: str, max_bytes: int) -> RequestError:
    return RequestError(413, f"{param}: the image is larger than {max_bytes} bytes",
                        param=param, code="image_too_large")


def _fetch_failed(param: str, why: str) -> RequestError:
    return RequestError(400, f"{param}: could not fetch the image: {why}", param=param,
                        code="image_fetch_failed")
