"""config.toml, read once at the edge into frozen dataclasses.

An unknown key or a bad value fails at start with the file, the key and what was
expected (ConfigError). Paths are resolved relative to the config file's folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_NAME_RE = re.compile(NAME_PATTERN)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def valid_name(name: str) -> bool:
    """Endpoint names are DNS labels: they end up in paths, cgroups and URLs."""
    return bool(_NAME_RE.match(name))


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
    max_body_bytes: int = 8 * 1024 * 1024
    engine_connections: int = 64


@dataclass(frozen=True)
class NodeConfig:
    cpus: int | str = "auto"
    memory: int | str = "auto"
    gpus: int | str = "auto"
    overcommit: float = 1.0


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


@dataclass(frozen=True)
class Config:
    path: Path | None
    server: ServerConfig
    node: NodeConfig
    supervisor: SupervisorConfig
    currency: str
    tiers: dict[str, Tier]
    deployments: tuple[DeploymentConfig, ...] = field(default_factory=tuple)


DEFAULT_TIERS = {
    "micro": Tier("micro", 1, 2 * 1024**3, 0, Decimal("0.033")),
    "small": Tier("small", 2, 4 * 1024**3, 0, Decimal("0.066")),
    "medium": Tier("medium", 4, 8 * 1024**3, 0, Decimal("0.132")),
    "large": Tier("large", 8, 16 * 1024**3, 0, Decimal("0.264")),
    "a10": Tier("a10", 4, 24 * 1024**3, 1, Decimal("1.00")),
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
    _only(raw, {"server", "node", "supervisor", "billing", "tiers", "deployments"}, where, "")

    server = _section(ServerConfig, raw.get("server", {}), where, "server")
    server = ServerConfig(**{
        **server.__dict__,
        "state_dir": (base / server.state_dir).resolve(),
        "models_dir": (base / server.models_dir).resolve(),
    })
    longest_socket = server.state_dir / "run" / "999999999.sock"
    if len(str(longest_socket).encode()) > 107:
        raise ConfigError(f"{where}: server.state_dir: {server.state_dir} is too long; engine "
                          "Unix sockets live under it and their paths must stay under 108 bytes")
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"{where}: server.port: expected 0..65535, got {server.port}")
    node = _section(NodeConfig, raw.get("node", {}), where, "node")
    for key in ("cpus", "memory", "gpus"):
        value = getattr(node, key)
        if value != "auto" and not (isinstance(value, int) or key == "memory"):
            raise ConfigError(f"{where}: node.{key}: expected \"auto\" or a number, got {value!r}")
    supervisor = _section(SupervisorConfig, raw.get("supervisor", {}), where, "supervisor")

    billing = raw.get("billing", {})
    _only(billing, {"currency"}, where, "billing")
    currency = billing.get("currency", "USD")

    tiers = dict(DEFAULT_TIERS)
    for name, t in raw.get("tiers", {}).items():
        tiers[name] = _tier(name, t, where)

    deployments = []
    seen: set[str] = set()
    for i, d in enumerate(raw.get("deployments", [])):
        key = f"deployments[{i}]"
        dep = _section(DeploymentConfig, d, where, key)
        if not valid_name(dep.name):
            raise ConfigError(f"{where}: {key}.name: {dep.name!r} is not a DNS label "
                              f"(pattern {NAME_PATTERN})")
        if dep.name in seen:
            raise ConfigError(f"{where}: {key}.name: {dep.name!r} is used twice")
        if dep.hardware not in tiers:
            raise ConfigError(f"{where}: {key}.hardware: unknown tier {dep.hardware!r}; "
                              f"tiers are {', '.join(tiers)}")
        seen.add(dep.name)
        deployments.append(dep)

    return Config(path=path, server=server, node=node, supervisor=supervisor,
                  currency=currency, tiers=tiers, deployments=tuple(deployments))


def _tier(name: str, raw: Any, where: str) -> Tier:
    key = f"tiers.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {key}: expected a table")
    _only(raw, {"cpus", "memory", "gpus", "price_per_hour"}, where, key)
    default = DEFAULT_TIERS.get(name)
    try:
        cpus = int(raw.get("cpus", default.cpus if default else 1))
        memory = parse_size(raw.get("memory", default.memory_bytes if default else 2 * 1024**3))
        gpus = int(raw.get("gpus", default.gpus if default else 0))
        price = Decimal(str(raw.get("price_per_hour",
                                    default.price_per_hour if default else "0")))
    except (ValueError, TypeError, InvalidOperation) as e:
        raise ConfigError(f"{where}: {key}: {e}") from None
    if cpus < 1 or gpus < 0 or price < 0:
        raise ConfigError(f"{where}: {key}: cpus >= 1, gpus >= 0 and price >= 0 expected")
    return Tier(name, cpus, memory, gpus, price)


def _only(raw: Any, allowed: set[str], where: str, prefix: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix or 'top level'}: expected a table")
    for key in raw:
        if key not in allowed:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: {full}: unknown key; expected one of "
                              f"{', '.join(sorted(allowed))}")


def _section(cls: Any, raw: Any, where: str, prefix: str) -> Any:
    names = {f.name: f for f in fields(cls)}
    _only(raw, set(names), where, prefix)
    kwargs = {}
    for key, value in raw.items():
        expected = names[key].type
        kwargs[key] = _coerce(value, str(expected), f"{where}: {prefix}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {prefix}: {e}") from None


def _coerce(value: Any, expected: str, where: str) -> Any:
    """Check a TOML value against a dataclass field's (string) annotation."""
    if expected == "Path":
        if isinstance(value, str) and value:
            return Path(value)
    elif expected == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected == "float":
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    elif expected == "str":
        if isinstance(value, str):
            return value
    elif expected == "str | None":
        if value is None or isinstance(value, str):
            return value
    elif expected == "int | str":
        if isinstance(value, int | str) and not isinstance(value, bool):
            return value
    else:  # pragma: no cover - a field type this reader does not know
        raise AssertionError(expected)
    raise ConfigError(f"{where}: expected {expected.replace('Path', 'a path')}, got {value!r}")
