"""Requests the HTTP parser refuses (before any route or middleware) are answered in the
JSON error shape too, by the real `berth serve` on a raw socket."""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.e2e


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def port(berth_module) -> int:
    return berth_module([]).port


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 400,
     "request_line_too_long"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request_line_too_long"),
    (b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_http_method"),
    ("GET /api/usage?since=\u0661\u0667 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400, None),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 400, None),
], ids=["long-header", "long-url", "bad-method", "non-ascii-query", "too-many-headers"])
def test_parser_refusals_are_json_with_a_code(port, request_bytes, status, code) -> None:
    got, headers, body = _raw(port, request_bytes)
    assert got == status
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == code if code else error["code"].startswith("bad_http_request")
    assert len(error["message"]) < 300  # the offending bytes are not echoed back whole


def test_the_server_answers_normally_afterwards(port) -> None:
    got, _, body = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
    assert (got, json.loads(body)) == (200, {"status": "ok"})
