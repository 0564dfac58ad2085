#!/usr/bin/env python3
"""Schedules at scale, on the examples server (release) and its `Reminders` agent.

    python3 bench/schedules.py                 # both parts, as BENCHMARKS.md quotes them
    python3 bench/schedules.py --no-build --skip-pending

1. Firing: 100,000 one-shot reminders over 10,000 instances (a socket each), all due within
   the same 10 seconds. Every one must fire once; lateness is when its `reminder` frame reaches
   the client against the time it was set for (p50, p99, max); the server's CPU time over the
   firing, its RSS before scheduling and at its peak during the firing.
2. A store holding 1,000,000 pending reminders (1,000 instances of 1,000, due in a year): the
   time from starting the server to its first answered WebSocket upgrade, and its RSS then and
   10 s later, against the same server on an empty store. One instance is then asked to list
   its reminders, to show they are all there.

The server runs pinned to core 0, the load generator on core 1. Results go to
target/bench/schedules.json.
"""

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, RELEASE, ROOT, free_port


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def dir_mib(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


class Ws:
    """The least of a WebSocket client: text frames out (masked), text frames in."""

    def __init__(self, port, path, limit=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace").splitlines()[0])

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        else:
            header += bytes([0x80 | 126]) + len(data).to_bytes(2, "big")
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv(self):
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._read(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read(8), "big")
        payload = self._read(length)
        if first & 0x0F != 0x1:
            return self.recv()
        return json.loads(payload)

    def call(self, method, args):
        self.send(json.dumps({"type": "rpc", "id": "1", "method": method, "args": args}))
        while True:
            frame = self.recv()
            if frame.get("type") == "rpc" and frame.get("id") == "1":
                if not frame.get("success"):
                    raise RuntimeError(f"{method}: {frame.get('error')}")
                return frame.get("result")


def start_server(data, port, *extra):
    return subprocess.Popen(
        ["taskset", "-c", "0", RELEASE / "agents-examples", "--addr", f"127.0.0.1:{port}",
         "--data-dir", data, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(server):
    server.send_signal(signal.SIGTERM)
    _, log = server.communicate(timeout=60)
    return log


def time_to_first_upgrade(server, port, limit=60.0):
    """Seconds from `started` until an upgrade to a `MyAgent` instance is answered 101."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}: {server.stderr.read()}")
        try:
            Ws(port, "/agents/my-agent/probe", limit=1.0).sock.close()
            return
        except OSError:
            time.sleep(0.005)
    sys.exit(f"the server did not answer an upgrade within {limit}s")


def startup(data, port):
    started = time.monotonic()
    server = start_server(data, port)
    time_to_first_upgrade(server, port)
    ready_s = time.monotonic() - started
    time.sleep(3)
    rss_3s = rss_mib(server.pid)
    time.sleep(7)
    rss_10s = rss_mib(server.pid)
    return server, {"ready_s": round(ready_s, 3), "rss_3s_mib": round(rss_3s, 1),
                    "rss_10s_mib": round(rss_10s, 1)}


def loadgen(mode, port, *args, server=None):
    command = ["taskset", "-c", "1", RELEASE / "loadgen", mode, "--url", f"ws://127.0.0.1:{port}",
               *args]
    if server is not None:
        command += ["--server-pid", str(server.pid)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"loadgen {mode} failed:\n{run.stderr}")
    if run.stderr.strip():
        print(f"loadgen {mode} said:\n" + "\n".join(run.stderr.splitlines()[:10]))
    return next(json.loads(line[len("RESULT "):]) for line in run.stdout.splitlines()
                if line.startswith("RESULT "))


def firing(args):
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agents-schedules-") as data:
        server = start_server(data, port)
        try:
            time_to_first_upgrade(server, port)
            rss_idle = rss_mib(server.pid)
            result = loadgen("schedules", port, "--instances", str(args.instances), "--schedules",
                             str(args.schedules), "--spread", "10s", "--lead", args.lead,
                             "--timeout", "180s", server=server)
        finally:
            log = stop(server)
    result["rss_idle_mib"] = round(rss_idle, 1)
    result["server_errors"] = sum(1 for line in log.splitlines() if " ERROR " in line)
    return result


def pending(args):
    with tempfile.TemporaryDirectory(prefix="agents-empty-") as empty, \
            tempfile.TemporaryDirectory(prefix="agents-pending-") as full:
        port = free_port()
        server, empty_figures = startup(empty, port)
        stop(server)
        port = free_port()
        server = start_server(full, port)
        time_to_first_upgrade(server, port)
        instances = max(1, args.pending // 1000)
        filled = loadgen("pending", port, "--instances", str(instances), "--schedules",
                         str(args.pending), "--timeout", "3600s")
        stop(server)
        port = free_port()
        server, full_figures = startup(full, port)
        try:
            listed = Ws(port, "/agents/reminders/pending0").call("list", [])
            full_figures["listed_by_one_instance"] = len(listed)
        finally:
            stop(server)
        full_figures["store_mib"] = round(dir_mib(full), 1)
    return {
        "filled": filled,
        "empty": empty_figures,
        "full": full_figures,
        "rss_above_empty_mib": round(full_figures["rss_10s_mib"] - empty_figures["rss_10s_mib"], 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--lead", default="25s", help="time from now to the first due reminder")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--skip-firing", action="store_true")
    parser.add_argument("--skip-pending", action="store_true")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "agents-examples", "-p", "agents-bench"],
                       cwd=ROOT, check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"cores": os.cpu_count()}
    if not args.skip_firing:
        results["firing"] = firing(args)
        print(json.dumps(results["firing"], indent=1), flush=True)
    if not args.skip_pending:
        results["pending"] = pending(args)
        print(json.dumps(results["pending"], indent=1), flush=True)
    (OUT / "schedules.json").write_text(json.dumps(results, indent=1))
    print(f"results: {OUT / 'schedules.json'}")


if __name__ == "__main__":
    main()
