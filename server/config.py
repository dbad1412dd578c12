"""config.toml, read once at the edge into frozen dataclasses.

An unknown key or a bad value fails at start with the file, the key and what was
expected (ConfigError). Each key's check is in the tables below `DEFAULT_TIERS`.
Paths are resolved relative to the config file's folder.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from engines.protocol import DTYPES, Task

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_NAME_RE = re.compile(NAME_PATTERN)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def valid_name(name: str) -> bool:
    """Endpoint names are DNS labels: they end up in paths, cgroups and URLs."""
    return bool(_NAME_RE.fullmatch(name))  # not match(): "$" would allow a final "\n"


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string like "2GiB", "512M", "1.5 GB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "").lower().removesuffix("b")
            return int(float(m.group(1)) * _UNITS[unit])
    raise ValueError(f"expected a size such as 2GiB or 512MiB, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = Path("state")
    models_dir: Path = Path("models")
    max_body_bytes: int = 16 * 1024 * 1024  # sized for base64 images in chat requests
    engine_connections: int = 64
    files_ttl_s: int = 3600  # generated images asked for as `url` are served this long
    fetch_image_urls: bool = False  # engines may fetch http(s) image_url parts (public hosts)
    fetch_max_bytes: int = 20 * 1024 * 1024  # an image fetched by URL may be this big
    fetch_timeout_s: float = 10.0  # and may take this long to arrive
    embedding_max_tokens: int = 300_000  # tokens of all inputs of one embeddings request
    max_connections: int = 1024  # open client connections (capped below the file limit)
    idle_timeout_s: float = 15.0  # a connection with no request in progress is closed
    read_timeout_s: float = 30.0  # a request body must have arrived whole by then


@dataclass(frozen=True)
class NodeConfig:
    cpus: int | str = "auto"
    memory: int | str = "auto"
    gpus: int | str = "auto"
    overcommit: float = 1.0
    slice_driver: str = "auto"  # auto | v1 | v2 | none
    slice_parent: str = "berth"  # slices are <own cgroup>/<slice_parent>/<deployment>
    pids_max: int = 4096  # per deployment


@dataclass(frozen=True)
class SupervisorConfig:
    health_interval_s: float = 2.0
    health_timeout_s: float = 5.0
    health_misses: int = 3
    start_timeout_s: float = 900.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    crash_limit: int = 5
    crash_window_s: float = 600.0
    stable_after_s: float = 120.0
    stop_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0


@dataclass(frozen=True)
class LimitsConfig:
    """Admission limits of each deployment (server.limits.Gate); [[deployments]] may
    override max_concurrent and max_queued."""

    max_concurrent: int = 4  # requests proxied to one engine at once
    max_queued: int = 32  # requests waiting for a slot beyond that; more get 429
    queue_timeout_s: float = 30.0  # a request waiting longer gets 503
    retry_after_s: int = 2  # the Retry-After of those 429 and 503 answers


@dataclass(frozen=True)
class MeteringConfig:
    """How long usage history is kept (server.meter writes it, GET /api/usage reads it).

    Samples are kept per second for a recent window and rolled up, as they are taken,
    into per-minute and per-hour rows that live longer. Billing rows are a ledger and
    are never pruned.
    """

    second_retention_s: int = 3600  # 1 s samples: the last hour
    minute_retention_s: int = 7 * 86_400  # 1 min rollups: a week
    hour_retention_s: int = 400 * 86_400  # 1 h rollups: over a year
    request_retention_s: int = 30 * 86_400  # one row per inference request: a month


@dataclass(frozen=True)
class Tier:
    name: str
    cpus: int
    memory_bytes: int
    gpus: int
    price_per_hour: Decimal


@dataclass(frozen=True)
class DeploymentConfig:
    name: str
    model: str
    hardware: str
    owner: str = "admin"
    task: str | None = None
    dtype: str = "auto"
    max_concurrent: int | None = None  # None: [limits] max_concurrent
    max_queued: int | None = None  # None: [limits] max_queued


@dataclass(frozen=True)
class Config:
    path: Path | None
    server: ServerConfig
    node: NodeConfig
    supervisor: SupervisorConfig
    currency: str
    tiers: dict[str, Tier]
    deployments: tuple[DeploymentConfig, ...] = field(default_factory=tuple)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metering: MeteringConfig = field(default_factory=MeteringConfig)


DEFAULT_TIERS = {
    "micro": Tier("micro", 1, 2 * 1024**3, 0, Decimal("0.033")),
    "small": Tier("small", 2, 4 * 1024**3, 0, Decimal("0.066")),
    "medium": Tier("medium", 4, 8 * 1024**3, 0, Decimal("0.132")),
    "large": Tier("large", 8, 16 * 1024**3, 0, Decimal("0.264")),
    "a10": Tier("a10", 4, 24 * 1024**3, 1, Decimal("1.00")),
}


class _Expected(Exception):
    """Raised by a check (a TOML value -> the value to keep); args[0]: what was expected."""


Check = Callable[[Any], Any]


def _int(low: int, high: int | None = None) -> Check:
    what = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"

    def check(v: Any) -> int:
        if (isinstance(v, bool) or not isinstance(v, int)
                or v < low or (high is not None and v > high)):
            raise _Expected(what)
        return v
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Expected("true or false")
    return v


def _number(low: float, *, above: bool) -> Check:
    """A finite number > low (above=True) or >= low, kept as a float."""
    what = f"a number {'>' if above else '>='} {low:g}"

    def check(v: Any) -> float:
        try:
            x = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
        except OverflowError:
            x = math.nan
        if not math.isfinite(x) or x < low or (above and x == low):
            raise _Expected(what)
        return x
    return check


def _string(ok: Callable[[str], Any], what: str, make: Callable[[str], Any] = str) -> Check:
    """A string that `ok` accepts, turned into what `make` returns."""
    def check(v: Any) -> Any:
        if not isinstance(v, str) or not ok(v):
            raise _Expected(what)
        return make(v)
    return check


def _size(v: Any) -> int:
    try:
        size = parse_size(v)
    except ValueError:
        size = 0
    if size <= 0:
        raise _Expected("a size > 0 such as 2GiB or 512MiB")
    return size


def _price(v: Any) -> Decimal:
    try:
        price = Decimal(str(v)) if isinstance(v, int | float | str) else Decimal("NaN")
    except InvalidOperation:
        price = Decimal("NaN")
    if isinstance(v, bool) or not price.is_finite() or price < 0:
        raise _Expected('a price >= 0 such as "0.033"')
    return price


def _one_of(values: Any) -> Check:
    allowed = sorted(str(x) for x in values)
    return _string(allowed.__contains__, f"one of {', '.join(allowed)}")


_text = _string(str.strip, "a non-empty string")
_path = _string(bool, "a path", Path)
_name = _string(valid_name, f"a DNS label (pattern {NAME_PATTERN})")
_currency = _string(_CURRENCY_RE.match, "a 3-letter currency code such as USD")


def _auto_or(check: Check, keep: bool = False) -> Check:
    """"auto", or a value `check` accepts (kept as written where `keep`)."""
    def auto_or(v: Any) -> Any:
        if v == "auto":
            return v
        try:
            checked = check(v)
        except _Expected as e:
            raise _Expected(f'"auto" or {e}') from None
        return v if keep else checked
    return auto_or


_CHECKS: dict[type, dict[str, Check]] = {
    ServerConfig: {
        "host": _text, "port": _int(0, 65535), "state_dir": _path, "models_dir": _path,
        "max_body_bytes": _int(1024), "engine_connections": _int(1),
        "files_ttl_s": _int(1), "fetch_image_urls": _bool, "fetch_max_bytes": _int(1024),
        "fetch_timeout_s": _number(0, above=True), "embedding_max_tokens": _int(1),
        "max_connections": _int(16), "idle_timeout_s": _number(0, above=True),
        "read_timeout_s": _number(0, above=True),
    },
    NodeConfig: {
        "cpus": _auto_or(_int(1)), "memory": _auto_or(_size, keep=True),
        "gpus": _auto_or(_int(0)), "overcommit": _number(0, above=True),
        "slice_driver": _one_of(("auto", "v1", "v2", "none")), "pids_max": _int(16),
        "slice_parent": _name,
    },
    SupervisorConfig: {
        **{key: _number(0, above=True) for key in (
            "health_interval_s", "health_timeout_s", "start_timeout_s", "backoff_initial_s",
            "backoff_max_s", "crash_window_s", "stop_timeout_s")},
        "stable_after_s": _number(0, above=False), "drain_timeout_s": _number(0, above=False),
        "health_misses": _int(1), "crash_limit": _int(1),
    },
    LimitsConfig: {
        "max_concurrent": _int(1), "max_queued": _int(0),
        "queue_timeout_s": _number(0, above=True), "retry_after_s": _int(1),
    },
    MeteringConfig: {
        key: _int(60) for key in ("second_retention_s", "minute_retention_s",
                                  "hour_retention_s", "request_retention_s")
    },
    DeploymentConfig: {
        "name": _name, "model": _text, "hardware": _text, "owner": _text,
        "task": _one_of(Task), "dtype": _one_of(DTYPES),
        "max_concurrent": _int(1), "max_queued": _int(0),
    },
}
_TIER_CHECKS: dict[str, Check] = {
    "cpus": _int(1), "memory": _size, "gpus": _int(0), "price_per_hour": _price,
}


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a config.toml; raise ConfigError naming the file and key."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return config_from_dict(raw, path=p)


def config_from_dict(raw: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "<config>"
    base = path.parent.resolve() if path else Path.cwd()
    _only(raw, {"server", "node", "supervisor", "limits", "billing", "metering", "tiers",
                "deployments"}, where, "")

    server: ServerConfig = _section(ServerConfig, raw.get("server", {}), where, "server")
    server = replace(server, state_dir=(base / server.state_dir).resolve(),
                     models_dir=(base / server.models_dir).resolve())
    longest_socket = server.state_dir / "run" / "999999999.sock"
    if len(str(longest_socket).encode()) > 107:
        raise ConfigError(f"{where}: server.state_dir: {server.state_dir} is too long; engine "
                          "Unix sockets live under it and their paths must stay under 108 bytes")
    node: NodeConfig = _section(NodeConfig, raw.get("node", {}), where, "node")
    supervisor: SupervisorConfig = _section(SupervisorConfig, raw.get("supervisor", {}),
                                            where, "supervisor")
    if supervisor.backoff_max_s < supervisor.backoff_initial_s:
        raise ConfigError(f"{where}: supervisor.backoff_max_s: expected a number >= "
                          f"backoff_initial_s ({supervisor.backoff_initial_s:g}), "
                          f"got {supervisor.backoff_max_s:g}")
    limits: LimitsConfig = _section(LimitsConfig, raw.get("limits", {}), where, "limits")
    metering: MeteringConfig = _section(MeteringConfig, raw.get("metering", {}), where,
                                        "metering")

    billing = raw.get("billing", {})
    _only(billing, {"currency"}, where, "billing")
    currency = _check(_currency, billing.get("currency", "USD"), where, "billing.currency")

    raw_tiers = raw.get("tiers", {})
    if not isinstance(raw_tiers, dict):
        raise ConfigError(f"{where}: tiers: expected a table of tiers, got {raw_tiers!r}")
    tiers = dict(DEFAULT_TIERS)
    for name, t in raw_tiers.items():
        tiers[name] = _tier(name, t, where)

    raw_deployments = raw.get("deployments", [])
    if not isinstance(raw_deployments, list):
        raise ConfigError(f"{where}: deployments: expected an array of tables "
                          f"([[deployments]]), got {raw_deployments!r}")
    deployments = []
    seen: set[str] = set()
    for i, d in enumerate(raw_deployments):
        key = f"deployments[{i}]"
        dep: DeploymentConfig = _section(DeploymentConfig, d, where, key)
        if dep.name in seen:
            raise ConfigError(f"{where}: {key}.name: {dep.name!r} is used twice")
        if dep.hardware not in tiers:
            raise ConfigError(f"{where}: {key}.hardware: unknown tier {dep.hardware!r}; "
                              f"tiers are {', '.join(tiers)}")
        seen.add(dep.name)
        deployments.append(dep)

    return Config(path=path, server=server, node=node, supervisor=supervisor,
                  currency=currency, tiers=tiers, deployments=tuple(deployments),
                  limits=limits, metering=metering)


def _tier(name: str, raw: Any, where: str) -> Tier:
    key = f"tiers.{name}"
    _only(raw, set(_TIER_CHECKS), where, key)
    default = DEFAULT_TIERS.get(name) or Tier(name, 1, 2 * 1024**3, 0, Decimal(0))
    v = {k: _check(_TIER_CHECKS[k], value, where, f"{key}.{k}") for k, value in raw.items()}
    return Tier(name, v.get("cpus", default.cpus), v.get("memory", default.memory_bytes),
                v.get("gpus", default.gpus), v.get("price_per_hour", default.price_per_hour))


def _only(raw: Any, allowed: set[str], where: str, prefix: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix or 'top level'}: expected a table, got {raw!r}")
    for key in raw:
        if key not in allowed:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: {full}: unknown key; expected one of "
                              f"{', '.join(sorted(allowed))}")


def _section(cls: Any, raw: Any, where: str, prefix: str) -> Any:
    """An instance of dataclass `cls` from a table, each key checked by _CHECKS[cls]."""
    checks = _CHECKS[cls]
    _only(raw, set(checks), where, prefix)
    required = [f.name for f in fields(cls) if f.default is MISSING]
    missing = [key for key in required if key not in raw]
    if missing:
        raise ConfigError(f"{where}: {prefix}: missing required key(s) {', '.join(missing)}; "
                          f"required keys are {', '.join(required)}")
    return cls(**{k: _check(checks[k], v, where, f"{prefix}.{k}") for k, v in raw.items()})


def _check(check: Check, value: Any, where: str, key: str) -> Any:
    try:
        return check(value)
    except _Expected as e:
        raise ConfigError(f"{where}: {key}: expected {e}, got {value!r}") from None
