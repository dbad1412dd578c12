"""The real `berth` command against a real `berth serve`: a deployment's whole life
through the CLI, and API errors printed as one clean line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import CHAT_MODEL, BerthServer, pid_alive
from tests.helpers import ADMIN_TOKEN

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(berth_module) -> BerthServer:
    server = berth_module([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    server.wait_status("chat", "ready")
    return server


def cli_env(server: BerthServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    env["BERTH_URL"] = server.url
    env["BERTH_TOKEN"] = ADMIN_TOKEN
    env["PYTHONPATH"] = str(ROOT)
    token = server.state_dir / "admin.token"
    if token.is_file():  # where the admin API wants a token, the CLI sends it
        env["BERTH_TOKEN"] = token.read_text().strip()
    return env


def berth(server: BerthServer, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], env=cli_env(server),
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    return str(result.stdout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("berth: "), result.stderr
    return lines[0]


def ls_rows(server: BerthServer) -> dict[str, dict[str, str]]:
    """`berth ls` parsed back: {name: {column: value}} (REASON may hold spaces)."""
    header, *lines = ok(berth(server, "ls")).splitlines()
    columns = header.split()
    rows = {}
    for line in lines:
        cells = line.split(maxsplit=len(columns) - 1)
        rows[cells[0]] = dict(zip(columns, cells, strict=False))
    return rows


def test_a_deployment_lives_its_whole_life_through_the_cli(server):
    ok(berth(server, "users", "create", "ann"))
    out = ok(berth(server, "deploy", "chat2", "--model", CHAT_MODEL, "--hardware", "micro",
                   "--owner", "ann", "--wait"))
    assert "chat2 is ready" in out and f"{server.url}/endpoints/chat2/v1" in out
    assert "ready" in out.splitlines()[-2]  # the last change printed before the summary
    first = server.deployment("chat2")
    assert (first["status"], first["owner"]) == ("ready", "ann")

    row = ls_rows(server)["chat2"]
    assert row["MODEL"] == CHAT_MODEL and row["HARDWARE"] == "micro"
    assert row["STATUS"] == "ready" and row["PID"] == str(first["pid"])
    listed = json.loads(ok(berth(server, "ls", "--json")))
    assert {d["name"] for d in listed["data"]} == {"chat", "chat2"}

    ok(berth(server, "stop", "chat2"))
    server.wait_status("chat2", "stopped", timeout=60)
    assert ls_rows(server)["chat2"]["STATUS"] == "stopped"
    server.wait(lambda: not pid_alive(first["pid"]), 30, "the stopped engine to exit")

    out = ok(berth(server, "start", "chat2", "--wait"))
    assert "chat2 is ready" in out
    started = server.deployment("chat2")
    assert started["status"] == "ready" and started["pid"] != first["pid"]

    out = ok(berth(server, "restart", "chat2", "--wait"))
    assert "chat2 is ready" in out
    restarted = server.deployment("chat2")
    assert restarted["status"] == "ready" and restarted["pid"] != started["pid"]

    assert ok(berth(server, "logs", "chat2", "-n", "5")).strip()
    events = ok(berth(server, "events", "chat2"))
    statuses = [line.split()[2] for line in events.splitlines()[1:]]  # AT is two words
    assert {"starting", "loading", "ready", "stopping", "stopped"} <= set(statuses)

    # without --yes and without a terminal: refused, nothing deleted
    one_line_error(berth(server, "rm", "chat2"))
    assert server.deployment("chat2")["status"] == "ready"

    assert ok(berth(server, "rm", "chat2", "--yes")).strip() == "deleted chat2"
    assert "chat2" not in ls_rows(server)
    server.wait(lambda: not pid_alive(restarted["pid"]), 30, "the deleted engine to exit")
    line = one_line_error(berth(server, "logs", "chat2"))
    assert line == "berth: deployment 'chat2' does not exist"


def test_api_errors_are_printed_cleanly(server):
    line = one_line_error(berth(server, "deploy", "Bad_Name", "--model", CHAT_MODEL,
                                "--hardware", "micro"))
    assert "Bad_Name" in line and "not a valid endpoint name" in line
    line = one_line_error(berth(server, "deploy", "chat", "--model", CHAT_MODEL,
                                "--hardware", "micro"))
    assert "already exists" in line
    line = one_line_error(berth(server, "deploy", "x1", "--model", CHAT_MODEL,
                                "--hardware", "no-such-tier"))
    assert "no-such-tier" in line
    assert one_line_error(berth(server, "stop", "ghost")) == (
        "berth: deployment 'ghost' does not exist")
    assert "ghost" not in ls_rows(server)


def test_models_lists_the_catalog_and_the_local_weights(server):
    header, *lines = ok(berth(server, "models")).splitlines()
    assert header.split() == ["ID", "TASK", "PARAMS", "MEMORY", "SMALLEST-TIER", "PRESENT",
                              "AVAILABLE"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert "facebook/opt-125m" in rows  # from the catalog, weights or not
    assert rows[CHAT_MODEL][-2:] == ["yes", "yes"]  # present, available
    data = json.loads(ok(berth(server, "models", "--json")))["data"]
    assert any(m["id"] == CHAT_MODEL and m["present"] for m in data)


def test_logs_follow_prints_new_lines_and_ends_quietly_on_ctrl_c(server, tmp_path):
    out_path = tmp_path / "out"
    with open(out_path, "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "logs", "chat", "-n",
                                 "3", "-f"], env=cli_env(server), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            server.wait(lambda: out_path.read_text().count("\n") >= 1, 60, "the first lines")
            before = out_path.read_text().count("\n")
            # a restart writes new lines into the engine's log: -f must show them
            ok(berth(server, "restart", "chat", "--wait"))
            server.wait(lambda: out_path.read_text().count("\n") > before, 60, "new lines")
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (tmp_path / "err").read_text() == ""


def test_users_and_keys_through_the_cli(server: BerthServer) -> None:
    ok(berth(server, "users", "create", "erin"))
    assert "erin" in ok(berth(server, "users"))
    made = berth(server, "keys", "create", "--user", "erin", "--name", "laptop")
    key = ok(made).strip()
    assert key.startswith("bk_") and "shown this once" in made.stderr
    headers = {"Authorization": f"Bearer {key}"}
    resp = server.http.get("/v1/models", headers=headers)
    assert resp.status_code == 200 and resp.json()["data"] == []  # erin owns nothing yet
    key_id = key.split("_")[1]
    assert key_id in ok(berth(server, "keys", "ls"))
    ok(berth(server, "keys", "revoke", key_id))
    assert server.http.get("/v1/models", headers=headers).status_code == 401
    assert "no live key" in one_line_error(berth(server, "keys", "revoke", key_id))
    assert "--user" in one_line_error(berth(server, "keys", "create"))


def test_usage_prints_the_billing_table_and_csv(server: BerthServer) -> None:
    time.sleep(1.5)  # the preloaded `chat` has been billed for a while
    table = ok(berth(server, "usage"))
    assert "BILLED_SECONDS" in table and "chat" in table and "TOTAL" in table
    out = ok(berth(server, "usage", "--csv", "--group-by", "owner"))
    lines = out.strip().splitlines()
    assert lines[0] == "owner,billed_seconds,cost,currency"
    rows = [line.split(",") for line in lines[1:]]
    assert rows[-1][0] == "TOTAL"
    assert sum(Decimal(r[2]) for r in rows[:-1]) == Decimal(rows[-1][2])  # it adds up
    assert "since" in one_line_error(berth(server, "usage", "--since", "yesterday"))
