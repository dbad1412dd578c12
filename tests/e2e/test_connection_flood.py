"""A flood of idle and half-sent connections against the real `berth serve`: they are
capped and timed out, so the supervisor keeps the descriptors it needs and the
deployment stays ready on the same engine; bodies that never arrive whole are a 408,
bodies that cannot be decoded a 400."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from tests.e2e.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_idle_connections_are_capped_and_closed_and_engines_stay_up(berth) -> None:
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}],
                   server={"max_connections": 32, "idle_timeout_s": 2.0})
    ready = server.wait_status("chat", "ready")
    assert server.proc is not None
    before = _fds(server.proc.pid)
    flood = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall(b"GET /v1/mod")  # never finished
        flood.append(s)
    time.sleep(1.0)
    assert _fds(server.proc.pid) < before + 32 + 16  # the rest were turned away at once
    # the half-sent ones are closed by the server once idle_timeout_s has passed
    for s in flood[:20]:
        s.settimeout(30)
        assert s.recv(1) == b""
    for s in flood:
        s.close()
    time.sleep(1.0)
    dep = server.deployment("chat")
    assert (dep["status"], dep["pid"], dep["restarts"]) == ("ready", ready["pid"], 0)
    assert server.http.post("/v1/completions", json={
        "model": "chat", "prompt": "x", "max_tokens": 2}).status_code == 200


def test_a_body_short_of_its_length_is_a_408_and_a_bad_gzip_a_400(berth) -> None:
    server = berth([], server={"read_timeout_s": 1.0})
    auth = f"Authorization: Bearer {server.http.headers['Authorization'].split()[1]}"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                  '{"model": "chat"'.encode())
        status, body = _answer(s)
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    plain = b'{"name": "x"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(f"POST /api/users HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n"
                  f"Content-Encoding: gzip\r\nContent-Length: {len(plain)}\r\n\r\n".encode()
                  + plain)
        status, body = _answer(s)
    assert (status, body["error"]["code"]) == (400, "invalid_body_encoding")
    assert server.http.get("/healthz").status_code == 200
