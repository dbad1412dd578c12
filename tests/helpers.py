"""Helpers shared by the server and end-to-end tests."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

FAST_SUPERVISOR = {
    "health_interval_s": 0.5,
    "health_timeout_s": 2.0,
    "health_misses": 3,
    "start_timeout_s": 120.0,
    "backoff_initial_s": 0.5,
    "backoff_max_s": 4.0,
    "stop_timeout_s": 5.0,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


ADMIN_TOKEN = "test-admin-token-not-secret"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Tests run more deployments than a 2-core machine holds: a roomy node, unless a test
# is about admission and says otherwise.
ROOMY_NODE = {"cpus": 16, "memory": "64GiB", "gpus": 0}
_servers = itertools.count()


def slice_parent() -> str:
    """A slice parent of its own for each test server: servers never touch each other's
    slices (nor a developer's `berth` running beside the tests)."""
    return f"berth-test-{os.getpid()}-{next(_servers)}"


def write_config(path: Path, *, state_dir: Path, models_dir: Path, port: int = 0,
                 deployments: list[dict[str, Any]] | None = None,
                 supervisor: dict[str, Any] | None = None,
                 node: dict[str, Any] | None = None,
                 tiers: dict[str, dict[str, Any]] | None = None,
                 server: dict[str, Any] | None = None) -> Path:
    """A config.toml for tests: temp state dir, the test models, a fast supervisor."""
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}",
             f"state_dir = {_toml_value(state_dir)}", f"models_dir = {_toml_value(models_dir)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (server or {}).items()]
    lines += ["", "[node]"]
    node = {"slice_parent": slice_parent(), **(node or ROOMY_NODE)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in node.items()]
    for name, tier in (tiers or {}).items():
        lines += ["", f"[tiers.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in tier.items()]
    lines += ["", "[supervisor]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in {**FAST_SUPERVISOR,
                                                      **(supervisor or {})}.items()]
    for dep in deployments or []:
        lines += ["", "[[deployments]]"] + [f"{k} = {_toml_value(v)}" for k, v in dep.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
