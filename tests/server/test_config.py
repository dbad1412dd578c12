from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from pathlib import Path

import pytest

from server.config import (
    _CHECKS,
    ConfigError,
    LimitsConfig,
    load_config,
    parse_size,
    valid_name,
)

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
    assert config.limits == LimitsConfig()  # the file documents the built-in defaults
    assert (config.limits.max_concurrent, config.limits.max_queued,
            config.limits.queue_timeout_s, config.limits.retry_after_s) == (4, 32, 30.0, 2)
    assert [(d.max_concurrent, d.max_queued) for d in config.deployments] == [(None, None)] * 2


def test_limits_default_when_the_section_is_absent(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("")
    assert load_config(path).limits == LimitsConfig(4, 32, 30.0, 2)


@pytest.mark.parametrize(("text", "needle"), [
    ("[server]\nprot = 1\n", "server.prot: unknown key"),
    ("[server]\nport = \"80\"\n", "server.port: expected an integer"),
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


DEP = 'name = "a"\nmodel = "m"\nhardware = "micro"\n'


@pytest.mark.parametrize(("text", "needle"), [
    # tiers
    ('[tiers.micro]\nprice_per_hour = "nan"\n', "tiers.micro.price_per_hour: expected a price"),
    ('[tiers.micro]\nprice_per_hour = "Infinity"\n', "tiers.micro.price_per_hour: expected"),
    ('[tiers.micro]\nprice_per_hour = "-1"\n', "tiers.micro.price_per_hour: expected a price >= 0"),
    ("[tiers.micro]\nprice_per_hour = -0.5\n", "tiers.micro.price_per_hour: expected"),
    ("[tiers.micro]\nprice_per_hour = nan\n", "tiers.micro.price_per_hour: expected"),
    ("[tiers.micro]\nprice_per_hour = true\n", "tiers.micro.price_per_hour: expected"),
    ('tiers = "micro"\n', "tiers: expected a table"),
    ("tiers = [1, 2]\n", "tiers: expected a table"),
    ("[tiers]\nmicro = 3\n", "tiers.micro: expected a table"),
    ("[tiers.micro]\ncpus = 1.7\n", "tiers.micro.cpus: expected an integer >= 1, got 1.7"),
    ("[tiers.micro]\ncpus = true\n", "tiers.micro.cpus: expected an integer"),
    ("[tiers.micro]\ncpus = 0\n", "tiers.micro.cpus: expected an integer >= 1"),
    ("[tiers.micro]\ngpus = 2.9\n", "tiers.micro.gpus: expected an integer >= 0, got 2.9"),
    ("[tiers.micro]\ngpus = -1\n", "tiers.micro.gpus: expected an integer >= 0"),
    ('[tiers.micro]\nmemory = "0"\n', "tiers.micro.memory: expected a size > 0"),
    ("[tiers.micro]\nmemory = 0\n", "tiers.micro.memory: expected a size > 0"),
    ("[tiers.micro]\nmemory = 1.5\n", "tiers.micro.memory: expected a size"),
    ("[tiers.micro]\nflops = 1\n", "tiers.micro.flops: unknown key"),
    # node
    ("[node]\ncpus = -4\n", 'node.cpus: expected "auto" or an integer >= 1, got -4'),
    ("[node]\ncpus = 2.5\n", 'node.cpus: expected "auto" or an integer'),
    ('[node]\ncpus = "many"\n', 'node.cpus: expected "auto" or an integer'),
    ('[node]\nmemory = "banana"\n', 'node.memory: expected "auto" or a size > 0'),
    ("[node]\nmemory = -1\n", 'node.memory: expected "auto" or a size > 0'),
    ("[node]\ngpus = -1\n", 'node.gpus: expected "auto" or an integer >= 0'),
    ("[node]\novercommit = 0\n", "node.overcommit: expected a number > 0, got 0"),
    ("[node]\novercommit = -1.5\n", "node.overcommit: expected a number > 0"),
    ("[node]\novercommit = inf\n", "node.overcommit: expected a number > 0"),
    # billing
    ("[billing]\ncurrency = 42\n", "billing.currency: expected a 3-letter currency code"),
    ('[billing]\ncurrency = "dollars"\n', "billing.currency: expected a 3-letter"),
    ('[billing]\ncurrency = ""\n', "billing.currency: expected a 3-letter"),
    # server
    ("[server]\nengine_connections = -1\n", "server.engine_connections: expected an integer >= 1"),
    ("[server]\nengine_connections = 0\n", "server.engine_connections: expected an integer >= 1"),
    ("[server]\nmax_body_bytes = -5\n", "server.max_body_bytes: expected an integer >= 1024"),
    ("[server]\nmax_body_bytes = 1e6\n", "server.max_body_bytes: expected an integer"),
    ("[server]\nport = 70000\n", "server.port: expected an integer 0..65535, got 70000"),
    ("[server]\nport = -1\n", "server.port: expected an integer 0..65535"),
    ("[server]\nport = 80.0\n", "server.port: expected an integer"),
    ('[server]\nhost = ""\n', "server.host: expected a non-empty string"),
    ("[server]\nhost = 1\n", "server.host: expected a non-empty string"),
    ('[server]\nstate_dir = ""\n', "server.state_dir: expected a path"),
    ('server = "x"\n', "server: expected a table"),
    # supervisor
    ("[supervisor]\nhealth_misses = -3\n", "supervisor.health_misses: expected an integer >= 1"),
    ("[supervisor]\nhealth_misses = 2.5\n", "supervisor.health_misses: expected an integer"),
    ("[supervisor]\ncrash_limit = 0\n", "supervisor.crash_limit: expected an integer >= 1"),
    *[(f"[supervisor]\n{key} = {bad}\n", f"supervisor.{key}: expected a number > 0, got")
      for key in ("health_interval_s", "health_timeout_s", "start_timeout_s", "stop_timeout_s",
                  "backoff_initial_s", "backoff_max_s", "crash_window_s")
      for bad in ("0", "-1", "nan", "true", '"5"')],
    *[(f"[supervisor]\n{key} = {bad}\n", f"supervisor.{key}: expected a number >= 0, got")
      for key in ("stable_after_s", "drain_timeout_s") for bad in ("-1", "-0.5", "inf")],
    ("[supervisor]\nbackoff_max_s = -1\n",
     "supervisor.backoff_max_s: expected a number > 0, got -1"),
    ("[supervisor]\nbackoff_initial_s = 10\nbackoff_max_s = 5\n",
     "supervisor.backoff_max_s: expected a number >= backoff_initial_s (10), got 5"),
    ("[supervisor]\nbackoff_initial_s = 100\n", "supervisor.backoff_max_s: expected a number >="),
    # limits
    *[(f"[limits]\n{key} = {bad}\n", f"limits.{key}: expected an integer >= 1, got")
      for key in ("max_concurrent", "retry_after_s") for bad in ("0", "-1", "1.5", "true", '"4"')],
    *[(f"[limits]\nmax_queued = {bad}\n", "limits.max_queued: expected an integer >= 0, got")
      for bad in ("-1", "2.5", "false", '"32"')],
    *[(f"[limits]\nqueue_timeout_s = {bad}\n", "limits.queue_timeout_s: expected a number > 0")
      for bad in ("0", "-1", "nan", "inf", "true", '"30"')],
    ("[limits]\nmax_concurent = 4\n", "limits.max_concurent: unknown key; expected one of "
     "max_concurrent, max_queued, queue_timeout_s, retry_after_s"),
    ("limits = 4\n", "limits: expected a table, got 4"),
    ("[[limits]]\nmax_queued = 1\n", "limits: expected a table"),
    # deployments
    ('deployments = "x"\n', "deployments: expected an array of tables"),
    ("[deployments]\nname = 'a'\n", "deployments: expected an array of tables"),
    ("deployments = [1]\n", "deployments[0]: expected a table"),
    ('[[deployments]]\nname = "a"\n',
     "deployments[0]: missing required key(s) model, hardware; required keys are name, model, "
     "hardware"),
    ("[[deployments]]\n", "deployments[0]: missing required key(s) name, model, hardware"),
    (f'[[deployments]]\n{DEP}task = "vision"\n',
     "deployments[0].task: expected one of caption, embeddings, images, moderation, "
     "speech, text, vqa, got 'vision'"),
    (f'[[deployments]]\n{DEP}dtype = "int4"\n', "deployments[0].dtype: expected one of auto, "),
    (f'[[deployments]]\n{DEP}owner = ""\n', "deployments[0].owner: expected a non-empty string"),
    (f"[[deployments]]\n{DEP}owner = 7\n", "deployments[0].owner: expected a non-empty string"),
    ('[[deployments]]\nname = "a"\nmodel = ""\nhardware = "micro"\n',
     "deployments[0].model: expected a non-empty string"),
    ('[[deployments]]\nname = "a"\nmodel = "m"\nhardware = 1\n',
     "deployments[0].hardware: expected a non-empty string"),
    ("[[deployments]]\nname = 5\nmodel = 'm'\nhardware = 'micro'\n",
     "deployments[0].name: expected a DNS label"),
    (f"[[deployments]]\n{DEP}\n[[deployments]]\n{DEP}", "deployments[1].name: 'a' is used twice"),
    (f'[[deployments]]\n{DEP}\n[[deployments]]\nname = "b"\nmodel = "m"\nhardware = "gpu"\n',
     "deployments[1].hardware: unknown tier 'gpu'"),
    (f"[[deployments]]\n{DEP}gpus = 1\n", "deployments[0].gpus: unknown key"),
    (f"[[deployments]]\n{DEP}max_concurrent = 0\n",
     "deployments[0].max_concurrent: expected an integer >= 1, got 0"),
    (f"[[deployments]]\n{DEP}max_concurrent = 2.0\n",
     "deployments[0].max_concurrent: expected an integer >= 1, got 2.0"),
    (f"[[deployments]]\n{DEP}max_queued = -1\n",
     "deployments[0].max_queued: expected an integer >= 0, got -1"),
    (f'[[deployments]]\n{DEP}max_queued = "8"\n',
     "deployments[0].max_queued: expected an integer >= 0, got '8'"),
    (f"[[deployments]]\n{DEP}queue_timeout_s = 5\n", "deployments[0].queue_timeout_s: unknown key"),
])
def test_bad_value_names_file_key_and_what_was_expected(tmp_path, text, needle):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ")
    assert needle in str(e.value)


def test_edge_values_that_are_fine_are_accepted(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nport = 0\nmax_body_bytes = 1024\nengine_connections = 1\n'
        '[node]\ncpus = 16\nmemory = "64GiB"\ngpus = 0\novercommit = 1.5\n'
        "[supervisor]\nstable_after_s = 0\ndrain_timeout_s = 0\nbackoff_initial_s = 2\n"
        "backoff_max_s = 2\nhealth_interval_s = 0.5\nhealth_misses = 1\ncrash_limit = 1\n"
        '[billing]\ncurrency = "EUR"\n'
        "[limits]\nmax_concurrent = 1\nmax_queued = 0\nqueue_timeout_s = 1\nretry_after_s = 1\n"
        "[tiers.micro]\nprice_per_hour = 0.5\nmemory = 1073741824\n"
        '[tiers.free]\nprice_per_hour = "0"\n'
        f'[[deployments]]\n{DEP}task = "embeddings"\ndtype = "bfloat16"\nowner = "ann"\n'
        '[[deployments]]\nname = "b"\nmodel = "m"\nhardware = "free"\ntask = "text"\n'
        "max_concurrent = 16\nmax_queued = 0\n"
        '[[deployments]]\nname = "c"\nmodel = "m"\nhardware = "micro"\nmax_queued = 100\n')
    config = load_config(path)
    assert config.server.port == 0
    assert (config.node.cpus, config.node.memory, config.node.overcommit) == (16, "64GiB", 1.5)
    assert config.supervisor.stable_after_s == 0.0
    assert isinstance(config.supervisor.backoff_max_s, float)
    assert config.currency == "EUR"
    assert config.tiers["micro"].price_per_hour == Decimal("0.5")
    assert config.tiers["micro"].memory_bytes == 1024**3
    assert config.tiers["micro"].cpus == 1  # the seed's value where the key is not given
    assert config.tiers["free"].price_per_hour == 0
    assert [(d.task, d.dtype, d.owner) for d in config.deployments] == [
        ("embeddings", "bfloat16", "ann"), ("text", "auto", "admin"), (None, "auto", "admin")]
    assert config.limits == LimitsConfig(max_concurrent=1, max_queued=0, queue_timeout_s=1.0,
                                         retry_after_s=1)
    assert isinstance(config.limits.queue_timeout_s, float)
    assert [(d.max_concurrent, d.max_queued) for d in config.deployments] == [
        (None, None), (16, 0), (None, 100)]


def test_every_field_has_a_check():
    for cls, checks in _CHECKS.items():
        assert set(checks) == {f.name for f in fields(cls)}, cls


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


def test_every_config_key_is_in_the_readme_reference() -> None:
    from server.config import (
        _CHECKS,
        LimitsConfig,
        MeteringConfig,
        NodeConfig,
        ServerConfig,
        SupervisorConfig,
    )

    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `")]
    sections = {ServerConfig: "server", NodeConfig: "node", SupervisorConfig: "supervisor",
                LimitsConfig: "limits", MeteringConfig: "metering"}
    missing = []
    for cls, section in sections.items():
        mine = [r for r in rows if f"`{section}." in r]
        missing += [f"{section}.{key}" for key in _CHECKS[cls]
                    if not any(f"`{section}.{key}`" in r or f"`{key}`" in r for r in mine)]
    assert any("`billing.currency`" in r for r in rows)
    assert missing == []
