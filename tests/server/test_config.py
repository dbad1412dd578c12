from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from server.config import ConfigError, load_config, parse_size, valid_name

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_reads_the_seed_tiers_and_two_deployments():
    config = load_config(ROOT / "config.toml")
    assert set(config.tiers) == {"micro", "small", "medium", "large", "a10"}
    micro = config.tiers["micro"]
    assert (micro.cpus, micro.memory_bytes, micro.gpus) == (1, 2 * 1024**3, 0)
    assert config.tiers["a10"].gpus == 1
    assert config.tiers["large"].price_per_hour == Decimal("0.264")
    assert [d.name for d in config.deployments] == ["embed", "chat"]
    assert config.server.state_dir == (ROOT / "state").resolve()


@pytest.mark.parametrize(("text", "needle"), [
    ("[server]\nprot = 1\n", "server.prot: unknown key"),
    ("[server]\nport = \"80\"\n", "server.port: expected int"),
    ("[supervisor]\nbackoff_max_s = -1\n", "supervisor.backoff_max_s"),
    ("[tiers.micro]\nmemory = \"lots\"\n", "tiers.micro"),
    ("[[deployments]]\nname = \"Bad/Name\"\nmodel = \"m\"\nhardware = \"micro\"\n",
     "deployments[0].name"),
    ("[[deployments]]\nname = \"a\"\nmodel = \"m\"\nhardware = \"huge\"\n",
     "unknown tier 'huge'"),
    ("[[deployments]]\nname = \"a\"\nmodel = \"m\"\n", "deployments[0]"),
    ("[server\n", "not valid TOML"),
])
def test_bad_config_names_file_and_key(tmp_path, text, needle):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    assert needle in str(e.value)


def test_state_dir_too_long_for_sockets_is_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\nstate_dir = "{"x" * 120}"\n')
    with pytest.raises(ConfigError, match="too long"):
        load_config(path)


def test_sizes_and_names():
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512M") == 512 * 1000**2
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("-1G")
    assert valid_name("chat-1")
    for bad in ["", "-a", "a-", "A", "a/b", "..", "a b", "é", "a" * 64, "a_b"]:
        assert not valid_name(bad), bad
