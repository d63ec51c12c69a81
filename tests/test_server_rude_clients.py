"""A live ``calmops serve`` (uvicorn, a free loopback port) against clients that leave or stall mid-body.

Raw sockets play the rude clients: one that sends its headers and part of its body, then closes; one that
stops sending; one that trickles a byte at a time. The server is started with ``--body-timeout-seconds 1``
and an API key, on a copy of the processed demo home, and stopped (its process group) at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from live_processes import answers_200, free_port, stop_group, wait_for
from processed_home import copy_home

KEY = "s3cret"
BODY_TIMEOUT = 1
DISCONNECTS = 40
ROW = b'[{"x1": 0.5, "x2": 1.0, "x3": 0.0, "x4": 0.0, "segment": "a"}]'


def request_head(length: int) -> bytes:
    return (f"POST /predict/demo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


@pytest.fixture(scope="module")
def server(processed_home, tmp_path_factory):
    """(port, log file) of a running ``calmops serve``."""
    tmp = tmp_path_factory.mktemp("rude")
    home = copy_home(processed_home, tmp)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in ("CALMOPS_MODEL_KEY", "CALMOPS_MODEL_KEY_FILE")},
           "CALMOPS_API_KEY": KEY}
    log_path = tmp / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "calmops"), "--home", str(home.root), "serve", "--port", str(port),
             "--body-timeout-seconds", str(BODY_TIMEOUT)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = f"http://127.0.0.1:{port}/health"
        wait_for(lambda: answers_200(health, process), 120, health, interval=0.5)
        yield port, log_path
    finally:
        stop_group(process)


def predict(port: int, body: bytes = ROW) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict/demo", data=body,
                                 headers={"Content-Type": "application/json", "X-API-Key": KEY})
    with urllib.request.urlopen(req, timeout=60) as response:
        return response.status, json.load(response)


def read_until_closed(sock: socket.socket, deadline: float, trickle: bool = False) -> bytes:
    """What the server sends until it closes the connection; a trickling client sends a body byte between
    reads. Gives up at ``deadline`` (time.monotonic) with what came."""
    received = b""
    while time.monotonic() < deadline:
        if trickle:
            try:
                sock.sendall(b" ")
            except OSError:  # the server closed the connection
                trickle = False
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def test_clients_that_leave_mid_body_are_one_info_line_each(server):
    port, log_path = server
    before = log_path.read_text().splitlines()
    for i in range(DISCONNECTS):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request_head(1000) + ROW[: i % 20])  # headers only, or part of the body
            time.sleep(0.02)

    def disconnect_lines() -> list[str]:
        new = log_path.read_text().splitlines()[len(before):]
        return [line for line in new if "disconnected before its body was in" in line]

    try:
        wait_for(lambda: len(disconnect_lines()) >= DISCONNECTS, 60, f"{DISCONNECTS} disconnect lines")
    except AssertionError:
        pass  # the assertions below show what the log holds instead
    new = log_path.read_text().splitlines()[len(before):]
    assert len(new) == DISCONNECTS, "\n".join(new[:80])
    assert all(line.startswith("INFO 127.0.0.1:") and "POST /predict/demo" in line for line in new), new[:5]
    assert "bytes of 1000 bytes came" in new[-1]
    assert predict(port)[0] == 200  # and the server answers as before


@pytest.mark.parametrize("client", ["headers only", "part of the body", "a byte at a time"])
def test_a_body_that_does_not_arrive_gets_408_and_the_connection_closes(server, client):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.2)
        sock.sendall(request_head(len(ROW) + 10_000) + (ROW[:10] if client == "part of the body" else b""))
        health = f"http://127.0.0.1:{port}/health"
        with urllib.request.urlopen(health, timeout=60) as answer:  # others are served meanwhile
            assert answer.status == 200
        received = read_until_closed(sock, time.monotonic() + 60, trickle=client == "a byte at a time")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:500]
    assert b"connection: close" in head.lower()
    detail = json.loads(body)["detail"]
    assert f"the body did not arrive within {BODY_TIMEOUT} s of the headers" in detail, detail
    assert predict(port)[0] == 200
