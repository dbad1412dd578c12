"""The `berth` client commands without a real server: help texts, failures that must be
one clean line (no server, no hub, no TTY, bad config), and the output formats against
a tiny stand-in for the admin API (stdlib http.server in a thread)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from server import cli, pull

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["serve", "deploy", "ls", "rm", "stop", "start", "restart", "logs", "events",
            "models", "pull"]


def closed_port() -> int:
    """A local port where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def berth(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
          stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """The real command, as a subprocess."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("BERTH_", "HF_"))}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "server.cli", *args], env=full_env,
                          cwd=cwd, stdin=stdin, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("berth: ")
    for part in parts:
        assert part in lines[0]
    return lines[0]


# -- help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: berth {command}" in out
    assert "example:" in out
    assert f"berth {command}" in out.split("example:")[1]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out
    assert "BERTH_URL" in out and "BERTH_TOKEN" in out and "--url" in out


def test_the_cli_imports_nothing_heavy():
    """`berth --help` stays fast: no aiohttp, no HTTP libraries, no hub, no torch."""
    code = ("import sys, server.cli; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'aiohttp', 'httpx', 'huggingface_hub', 'torch', 'transformers', 'asyncio'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# -- failures are one line ----------------------------------------------------------------

@pytest.mark.parametrize("args", [["ls"], ["deploy", "x", "--model", "m", "--hardware", "micro"],
                                  ["logs", "x"], ["models"]])
def test_unreachable_server_is_one_line_and_exit_1(args):
    url = f"http://127.0.0.1:{closed_port()}"
    result = berth(*args, env={"BERTH_URL": url})
    line = assert_one_line_error(result)
    assert line == f"berth: cannot reach berth at {url} (is `berth serve` running?)"


def test_url_option_works_after_the_command_and_beats_the_environment():
    url = f"http://127.0.0.1:{closed_port()}"
    result = berth("ls", "--url", url, env={"BERTH_URL": "http://127.0.0.1:9"})
    assert_one_line_error(result, url)


def test_rm_without_yes_refuses_when_stdin_is_not_a_terminal():
    url = f"http://127.0.0.1:{closed_port()}"
    result = berth("rm", "chat", env={"BERTH_URL": url})
    assert_one_line_error(result, "chat", "--yes")


def test_serve_with_a_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nprot = 8080\n')
    result = berth("serve", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "prot" in result.stderr and str(config) in result.stderr


def test_bad_option_values_are_usage_errors():
    result = berth("logs", "x", "-n", "0")
    assert result.returncode == 2
    assert "expected 1 or more" in result.stderr


# -- pull ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hub_env", ["refused", "offline"])
def test_pull_fails_fast_and_clearly_where_the_hub_cannot_be_reached(tmp_path, hub_env):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    if hub_env == "refused":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    else:
        env["HF_HUB_OFFLINE"] = "1"
    result = berth("pull", "facebook/opt-125m", "--models-dir", str(tmp_path / "models"),
                   "--timeout", "2", env=env)
    assert_one_line_error(result, "facebook/opt-125m", "Hugging Face Hub cannot be reached")
    assert not (tmp_path / "models" / "facebook").exists()


def test_pull_gives_up_on_a_hub_that_never_answers(tmp_path):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result = berth("pull", "facebook/opt-125m", "--models-dir", str(tmp_path),
                       "--timeout", "1", env={"HF_HOME": str(tmp_path / "hf"),
                                              "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert_one_line_error(result, "facebook/opt-125m", "cannot be reached")


def test_pull_takes_models_dir_from_the_config(tmp_path):
    (tmp_path / "config.toml").write_text('[server]\nmodels_dir = "weights"\n')
    result = berth("pull", "facebook/opt-125m", "--config", str(tmp_path / "config.toml"),
                   env={"HF_HOME": str(tmp_path / "hf"),
                        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"})
    assert result.returncode == 1
    assert f"into {tmp_path / 'weights' / 'facebook' / 'opt-125m'}" in result.stdout


def test_pull_refuses_an_id_that_is_not_org_name(tmp_path):
    result = berth("pull", "../etc", "--models-dir", str(tmp_path))
    assert_one_line_error(result, "not a Hugging Face model id")


def test_pull_canonicalises_aliases_through_the_catalog(monkeypatch):
    def resolve(model: str) -> Any:
        if model != "bark/suno":
            raise KeyError(model)
        return types.SimpleNamespace(id="suno/bark")

    fake = types.ModuleType("server.catalog")
    fake.resolve = resolve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server.catalog", fake)
    assert pull.resolve("bark/suno") == ("suno/bark", "suno/bark")
    assert pull.resolve("unknown/model") == ("unknown/model", "unknown/model")


def test_pull_without_a_catalog_keeps_the_id(monkeypatch):
    monkeypatch.setitem(sys.modules, "server.catalog", None)  # import fails
    assert pull.resolve("bark/suno") == ("bark/suno", "bark/suno")


def test_pull_knows_the_catalogs_aliases_and_hub_ids():
    pytest.importorskip("server.catalog")
    assert pull.resolve("bark/suno") == ("suno/bark", "suno/bark")
    assert pull.resolve("opt-125m") == ("facebook/opt-125m", "facebook/opt-125m")
    assert pull.resolve("lucataco/moondream2") == ("lucataco/moondream2",
                                                   "vikhyatk/moondream2")


# -- against a stand-in admin API ---------------------------------------------------------

Reply = tuple[int, Any]


class StubApi:
    """Canned answers by (method, path); a list of answers is served in turn, the last
    one repeated. Every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Reply | list[Reply] | Callable[..., Reply]] = {}
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                stub.requests.append({"method": self.command, "path": path, "query": query,
                                      "headers": dict(self.headers),
                                      "body": json.loads(body) if body else None})
                status, payload = stub.answer(self.command, path, query)
                raw = payload.encode() if isinstance(payload, str) else json.dumps(
                    payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(payload, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method: str, path: str, query: str) -> Reply:
        route = self.routes.get((method, path))
        if route is None:
            return 404, {"error": {"message": f"no route {method} {path}",
                                   "type": "not_found_error", "code": None, "param": None}}
        if callable(route):
            return route(query)
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route


@pytest.fixture
def api() -> Iterator[StubApi]:
    stub = StubApi()
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()
    thread.join()


def run(api: StubApi, *args: str, capsys: Any) -> tuple[int, str, str]:
    code = cli.main(["--url", api.url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def dep(name: str = "chat", **kw: Any) -> dict[str, Any]:
    base = {"name": name, "model": "berth-demo/tiny-random-llama-chat", "hardware": "micro",
            "owner": None, "task": "text", "status": "ready", "reason": None, "pid": 4242,
            "restarts": 0, "created_at": "2024-01-01T00:00:00.000Z",
            "ready_at": "2024-01-01T00:00:05.000Z", "endpoint": f"/endpoints/{name}/v1"}
    return {**base, **kw}


def test_ls_is_a_table_with_reason_for_the_non_ready(api, capsys):
    api.routes["GET", "/api/deployments"] = (200, {"data": [
        dep("chat"), dep("embed", status="crashed", reason="killed by SIGKILL", pid=None,
                         restarts=2)]})
    code, out, _ = run(api, "ls", capsys=capsys)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "MODEL", "HARDWARE", "STATUS", "RESTARTS", "PID",
                              "AGE", "REASON"]
    assert rows[0].split()[:6] == ["chat", "berth-demo/tiny-random-llama-chat", "micro",
                                   "ready", "0", "4242"]
    assert rows[1].split()[3:6] == ["crashed", "2", "-"]
    assert rows[1].endswith("killed by SIGKILL")


def test_names_from_the_api_cannot_write_terminal_escapes(api, capsys):
    api.routes["GET", "/api/keys"] = (200, {"data": [
        {"id": "k1", "user": "alice", "name": "evil\u001b[31mRED\u001b[0m\u202eX",
         "created_at": "2024-01-01T00:00:00.000Z", "revoked_at": None}]})
    code, out, _ = run(api, "keys", "ls", capsys=capsys)
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out  # the raw characters never print
    assert "evil\\x1b[31mRED\\x1b[0m\\u202eX" in out  # shown escaped instead


def test_ls_json_is_the_api_answer(api, capsys):
    api.routes["GET", "/api/deployments"] = (200, {"data": [dep()]})
    code, out, _ = run(api, "ls", "--json", capsys=capsys)
    assert code == 0 and json.loads(out) == {"data": [dep()]}


def test_models_is_a_table(api, capsys):
    api.routes["GET", "/api/models"] = (200, {"data": [
        {"id": "facebook/opt-125m", "task": "text", "available": True,
         "parameters": 125_000_000, "memory_bytes": 500 * 2**20, "fits": ["micro", "small"],
         "smallest_tier": "micro", "present": False},
        {"id": "meta-llama/Meta-Llama-3-8B-Instruct", "task": "text", "available": True,
         "parameters": 8_030_000_000, "memory_bytes": 17 * 2**30, "fits": ["a10"],
         "smallest_tier": "a10", "present": True}]})
    code, out, _ = run(api, "models", capsys=capsys)
    assert code == 0
    header, opt, llama = out.splitlines()
    assert header.split() == ["ID", "TASK", "PARAMS", "MEMORY", "SMALLEST-TIER", "PRESENT",
                              "AVAILABLE"]
    assert opt.split() == ["facebook/opt-125m", "text", "125.0M", "500.0", "MiB", "micro",
                           "no", "yes"]
    assert llama.split()[2:5] == ["8.0B", "17.0", "GiB"]


def test_events_is_a_table(api, capsys):
    api.routes["GET", "/api/deployments/chat/events"] = (200, {"data": [
        {"at": "2024-01-01T00:00:00.000Z", "status": "starting", "reason": None, "pid": 7},
        {"at": "2024-01-01T00:00:01.000Z", "status": "crashed", "reason": "exit 3", "pid": 7}]})
    code, out, _ = run(api, "events", "chat", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["AT", "STATUS", "PID", "REASON"]
    assert lines[2].split()[2:] == ["crashed", "7", "exit", "3"]


def test_usage_totals_each_currency_and_marks_deleted_deployments(api, capsys):
    api.routes["GET", "/api/billing"] = (200, {
        "data": [{"key": "chat", "deployment_id": 1, "deleted": True, "billed_seconds": 10.0,
                  "cost": "0.0001", "currency": "USD"},
                 {"key": "chat", "deployment_id": 2, "deleted": False, "billed_seconds": 2.0,
                  "cost": "0.00002", "currency": "EUR"}],
        "totals": [{"billed_seconds": 2.0, "cost": "0.00002", "currency": "EUR"},
                   {"billed_seconds": 10.0, "cost": "0.0001", "currency": "USD"}],
        "total": {"billed_seconds": 2.0, "cost": "0.00002", "currency": "EUR"}})
    code, out, _ = run(api, "usage", "--csv", capsys=capsys)
    assert code == 0
    assert out.splitlines()[1:] == [
        "chat (deleted #1),10.000,0.0001,USD", "chat,2.000,0.00002,EUR",
        "TOTAL,2.000,0.00002,EUR", "TOTAL,10.000,0.0001,USD"]


def test_api_errors_are_one_line_exit_1(api, capsys):
    api.routes["POST", "/api/deployments"] = (409, {"error": {
        "message": "deployment 'chat' exists", "type": "conflict_error",
        "code": "deployment_exists", "param": "name"}})
    code, out, err = run(api, "deploy", "chat", "--model", "m", "--hardware", "micro",
                         capsys=capsys)
    assert (code, out, err) == (1, "", "berth: deployment 'chat' exists\n")
    assert api.requests[0]["body"] == {"name": "chat", "model": "m", "hardware": "micro"}


def test_a_non_json_error_is_named_plainly(api, capsys):
    api.routes["GET", "/api/deployments"] = (502, "<html>bad gateway</html>")
    code, _, err = run(api, "ls", capsys=capsys)
    assert code == 1 and err.startswith("berth: HTTP 502")


def test_the_token_is_sent_as_bearer(api, capsys, monkeypatch):
    monkeypatch.setenv("BERTH_TOKEN", "s3cret")
    api.routes["GET", "/api/deployments"] = (200, {"data": []})
    code, out, _ = run(api, "ls", capsys=capsys)
    assert code == 0 and out.startswith("no deployments")
    assert api.requests[0]["headers"]["Authorization"] == "Bearer s3cret"
    run(api, "ls", "--token", "other", capsys=capsys)
    assert api.requests[1]["headers"]["Authorization"] == "Bearer other"


def test_deploy_wait_prints_each_change_until_ready(api, capsys, monkeypatch):
    monkeypatch.setattr(cli, "POLL_S", 0.01)
    api.routes["POST", "/api/deployments"] = (201, dep(status="pending", pid=None,
                                                      ready_at=None))
    api.routes["GET", "/api/deployments/chat"] = [
        (200, dep(status="starting", ready_at=None)),
        (200, dep(status="loading", ready_at=None)),
        (200, dep(status="loading", ready_at=None)),
        (200, dep())]
    code, out, _ = run(api, "deploy", "chat", "--model", "m", "--hardware", "micro",
                       "--owner", "ann", "--wait", capsys=capsys)
    assert code == 0
    statuses = [line.split()[1] for line in out.splitlines() if line[:2].isdigit()]
    assert statuses == ["pending", "starting", "loading", "ready"]
    assert out.splitlines()[-1] == f"chat is ready: {api.url}/endpoints/chat/v1"
    assert api.requests[0]["body"]["owner"] == "ann"


def test_deploy_wait_exits_1_when_failed(api, capsys, monkeypatch):
    monkeypatch.setattr(cli, "POLL_S", 0.01)
    api.routes["POST", "/api/deployments"] = (201, dep(status="pending", pid=None))
    api.routes["GET", "/api/deployments/chat"] = (200, dep(status="failed", pid=None,
                                                          reason="weights missing"))
    code, _, err = run(api, "deploy", "chat", "--model", "m", "--hardware", "micro",
                       "--wait", capsys=capsys)
    assert code == 1 and err == "berth: chat is failed: weights missing\n"


def test_restart_wait_waits_for_a_new_ready(api, capsys, monkeypatch):
    monkeypatch.setattr(cli, "POLL_S", 0.01)
    old, new = dep(), dep(pid=5151, ready_at="2024-01-01T00:01:00.000Z")
    api.routes["GET", "/api/deployments/chat"] = [(200, old), (200, dep(status="loading")),
                                                  (200, new)]
    api.routes["POST", "/api/deployments/chat/restart"] = (200, old)
    code, out, _ = run(api, "restart", "chat", "--wait", capsys=capsys)
    assert code == 0
    assert "pid 5151" in out and "loading" in out


@pytest.mark.parametrize("verb", ["stop", "start", "restart"])
def test_actions_post_and_print_the_status(api, capsys, verb):
    api.routes["POST", f"/api/deployments/chat/{verb}"] = (200, dep(status="stopping",
                                                                   reason="stopped by user"))
    code, out, _ = run(api, verb, "chat", capsys=capsys)
    assert (code, out) == (0, "chat: stopping (stopped by user)\n")


def test_rm_yes_deletes(api, capsys):
    api.routes["DELETE", "/api/deployments/chat"] = (200, dep(status="deleted"))
    code, out, _ = run(api, "rm", "chat", "--yes", capsys=capsys)
    assert (code, out) == (0, "deleted chat\n")


def test_logs_follow_asks_from_the_last_offset_and_ends_quietly_on_ctrl_c(
        api, capsys, monkeypatch):
    def logs(query: str) -> Reply:
        if "offset=10" in query:
            return 200, {"name": "chat", "lines": ["third"], "offset": 16}
        if "offset=16" in query:
            return 200, {"name": "chat", "lines": [], "offset": 16}
        return 200, {"name": "chat", "lines": ["first", "second"], "offset": 10}

    api.routes["GET", "/api/deployments/chat/logs"] = logs
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    code, out, err = run(api, "logs", "chat", "-n", "2", "-f", capsys=capsys)
    assert (code, out, err) == (0, "first\nsecond\nthird\n", "")
    queries = [r["query"] for r in api.requests]
    assert queries[:3] == ["tail=2", "offset=10", "offset=16"]


def test_a_name_cannot_escape_its_path_segment(api, capsys):
    run(api, "stop", "a/../../x", capsys=capsys)
    assert api.requests[0]["path"] == "/api/deployments/a%2F..%2F..%2Fx/stop"
