#!/usr/bin/env python3
"""Runs every benchmark workload against agents-rs and its peers, side by side, and prints
the tables of BENCHMARKS.md (medians of --runs runs).

    python3 bench/run.py                  # everything, 3 runs each (about 15 minutes)
    python3 bench/run.py --runs 1 --only chat-32,connect --peers agents-rs,bun
    python3 bench/run.py --runs 6 --only chat-32 --peers agents-rs,bun --window 8
    python3 bench/run.py --runs 5 --peers agents-rs,bun --baseline /tmp/old/bench-server

Each run starts a fresh server pinned to core 0 and the load generator pinned to core 1
(taskset), and the peers take turns run by run; the servers are ours (`bench-server`: the
examples' agents), Bun's Bun.serve with pub/sub, Node's `ws`, and a minimal tokio-tungstenite
server. The peers come from npm
(`bench/peers`, `npm ci`) and from this workspace (`cargo build --release -p agents-bench`).
Raw results go to target/bench/results.json, the tables to target/bench/tables.md.

--baseline runs another build of `bench-server` (say, the last commit's, built in a git
worktree) as the peer `baseline`, wherever agents-rs runs, and pairs agents-rs with it run by
run: what a change costs or saves, on the same machine in the same minutes.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, RELEASE, ROOT, free_port, stop, wait_for_port

BENCH = ROOT / "bench"
PEERS_DIR = BENCH / "peers"
SERVER_CORE, LOADGEN_CORE = "0", "1"


# Another build of bench-server, run as the peer `baseline` (`--baseline`).
BASELINE = None


def peer_commands(port, data_dir):
    """How to start each server on `port`: (argv, working directory)."""
    ours = ["--addr", f"127.0.0.1:{port}", "--data-dir", data_dir, "--hibernate-after", "2s"]
    return {
        "agents-rs": ([str(RELEASE / "bench-server"), *ours], ROOT),
        "examples": ([str(RELEASE / "agents-examples"), *ours], ROOT),
        "baseline": ([str(BASELINE), *ours], ROOT),
        "bun": ([str(PEERS_DIR / "node_modules/bun/bin/bun.exe"), "bun-chat.mjs", str(port)], PEERS_DIR),
        "node-ws": (["node", "node-ws-chat.mjs", str(port)], PEERS_DIR),
        "tokio-tungstenite": ([str(RELEASE / "tokio-peer"), f"127.0.0.1:{port}"], ROOT),
    }


PEERS = ["agents-rs", "bun", "tokio-tungstenite", "node-ws"]
# Every server run.py knows: the peers, and the examples server (what users run), which only
# the reconnect storm measures.
KNOWN = [*PEERS, "examples"]

# name: (peers it runs on, loadgen mode and arguments, path, figures for the table)
WORKLOADS = {
    "chat-32": (PEERS, ["chat", "--conns", "32", "--senders", "32", "--messages", "2000", "--window", "4"],
                "/agents/chat-room/bench",
                ["deliveries_per_cpu_s", "deliveries_per_s", "server_cpu_s", "server_user_s", "server_system_s", "server_minor_faults", "latency.p50_ms", "latency.p99_ms", "latency.max_ms"]),
    "chat-1000": (PEERS, ["chat", "--conns", "1000", "--senders", "1", "--messages", "3000", "--window", "8"],
                  "/agents/chat-room/bench",
                  ["deliveries_per_cpu_s", "deliveries_per_s", "server_cpu_s", "server_user_s", "server_system_s", "server_minor_faults", "latency.p50_ms", "latency.p99_ms", "latency.max_ms"]),
    "idle": (PEERS, ["idle", "--conns", "19000", "--per-room", "100"],
             "/agents/chat-room/idle",
             ["bytes_per_conn_awake", "bytes_per_conn_hibernated", "rss_before", "rss_awake"]),
    "connect": (PEERS, ["connect", "--total", "30000", "--concurrency", "32"],
                "/agents/chat-room/connect",
                ["upgrades_per_s", "server_cpu_s", "latency.p50_ms", "latency.p99_ms", "latency.max_ms"]),
    # A reconnect storm: 5,000 clients connecting at once (64 upgrades in flight) into rooms of
    # 100, each join broadcast to the room.
    "storm": (["agents-rs", "examples", "bun"], ["storm", "--total", "5000", "--per-room", "100", "--concurrency", "64"],
              "/agents/chat-room/storm",
              ["connections_per_cpu_s", "connections_per_s", "server_cpu_s", "latency.p50_ms", "latency.p99_ms", "latency.max_ms"]),
    "rpc-relaxed": (["agents-rs"], ["rpc", "--rate", "1000", "--calls", "10000", "--conns", "4"],
                    "/agents/relaxed-counter/bench",
                    ["latency.p50_ms", "latency.p99_ms", "latency.max_ms", "calls_per_s", "writes_per_flush", "largest_batch"]),
    "rpc-gate": (["agents-rs"], ["rpc", "--rate", "1000", "--calls", "10000", "--conns", "4"],
                 "/agents/counter/bench",
                 ["latency.p50_ms", "latency.p99_ms", "latency.max_ms", "calls_per_s", "writes_per_flush", "largest_batch"]),
}


def run_once(peer, workload):
    _, args, path, _ = WORKLOADS[workload]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agents-bench-") as data_dir:
        argv, cwd = peer_commands(port, data_dir)[peer]
        log = open(OUT / f"{peer}.log", "a")
        server = subprocess.Popen(["taskset", "-c", SERVER_CORE, *argv], cwd=cwd, stdout=log, stderr=log)
        try:
            wait_for_port(port, server)
            loadgen = [str(RELEASE / "loadgen"), *args, "--url", f"ws://127.0.0.1:{port}{path}",
                       "--server-pid", str(server.pid)]
            if peer.startswith("agents-rs") or peer == "baseline":
                loadgen += ["--stats-url", f"http://127.0.0.1:{port}/agents/bench-stats/stats"]
                if args[0] == "idle":
                    # Rooms hibernate 2 s after their last join and park their sockets;
                    # jemalloc gives the freed pages back over its 10 s decay.
                    loadgen += ["--hibernate-wait", "25s"]
            done = subprocess.run(["taskset", "-c", LOADGEN_CORE, *loadgen], capture_output=True, text=True, timeout=900)
        finally:
            stop(server)
            log.close()
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen {workload} against {peer} failed ({done.returncode})")
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def figure(result, key):
    value = result
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(value):
    if value is None:
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{int(value):,}"


def paired(by_peer, key):
    """agents-rs (and the examples server) against Bun, and agents-rs against the baseline
    build, run by run (the peers take turns, so run n of each saw the same machine): the ratios
    of `key` and their median, a steadier verdict than two medians."""
    lines = []
    for ours_name, other, label in [("agents-rs", "bun", "Bun"), ("agents-rs", "baseline", "baseline"),
                                    ("examples", "bun", "Bun")]:
        ours, theirs = by_peer.get(ours_name), by_peer.get(other)
        if not ours or not theirs:
            continue
        ratios = [figure(a, key) / figure(b, key) for a, b in zip(ours, theirs)
                  if figure(a, key) is not None and figure(b, key)]
        if ratios:
            each = ", ".join(f"{r:.3f}" for r in ratios)
            lines += [f"{ours_name} / {label}, {key}, run by run: {each}; median {median(ratios):.3f}", ""]
    return lines


def machine():
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    versions = {}
    for name, argv in {"rustc": ["rustc", "--version"], "node": ["node", "--version"],
                       "bun": [str(PEERS_DIR / "node_modules/bun/bin/bun.exe"), "--version"]}.items():
        try:
            versions[name] = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            versions[name] = "missing"
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1),
            "kernel": platform.release(), **versions}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    parser.add_argument("--peers", default=",".join(KNOWN), help="servers, comma-separated")
    parser.add_argument("--window", type=int, help="messages each chat sender keeps in flight "
                        "(default: 4 in chat-32, 8 in chat-1000)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries and node_modules as they are")
    parser.add_argument("--baseline", type=Path, help="another bench-server binary, run as the peer "
                        "`baseline` wherever agents-rs runs, and paired with it")
    options = parser.parse_args()
    workloads = options.only.split(",")
    peers = options.peers.split(",")
    for name in workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name}; known: {', '.join(WORKLOADS)}")
    for name in peers:
        if name not in KNOWN:
            parser.error(f"unknown peer {name}; known: {', '.join(KNOWN)}")
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    if options.baseline is not None:
        if not options.baseline.is_file():
            parser.error(f"--baseline {options.baseline}: no such file")
        global BASELINE
        BASELINE = options.baseline.resolve()
        peers.insert(peers.index("agents-rs") + 1 if "agents-rs" in peers else 0, "baseline")
        for name, (on, args, path, keys) in WORKLOADS.items():
            if "agents-rs" in on:
                WORKLOADS[name] = ([*on, "baseline"], args, path, keys)
    if options.window is not None:
        if options.window < 1:
            parser.error("--window must be at least 1")
        if not any("--window" in WORKLOADS[name][1] for name in workloads):
            print("--window applies to the chat workloads only; none is selected", file=sys.stderr)
        for name, (on, args, path, keys) in WORKLOADS.items():
            if "--window" in args:
                args = list(args)
                args[args.index("--window") + 1] = str(options.window)
                WORKLOADS[name] = (on, args, path, keys)
    if shutil.which("taskset") is None:
        sys.exit("taskset is missing (Debian package util-linux)")
    OUT.mkdir(parents=True, exist_ok=True)
    if not options.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "agents-bench", "-p", "agents-examples"], cwd=ROOT, check=True)
        if {"bun", "node-ws"} & set(peers):
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS_DIR, check=True)

    results = {"machine": machine(), "runs": options.runs, "window": options.window, "workloads": {}}
    for workload in workloads:
        on, _, _, _ = WORKLOADS[workload]
        by_peer = results["workloads"].setdefault(workload, {})
        # Run n of every peer, then run n + 1 of every peer: the machine's speed drifts over
        # minutes (±15% on this VM), and interleaving spreads the drift over all the peers
        # instead of handing it to whichever ran last.
        for n in range(options.runs):
            for peer in [p for p in peers if p in on]:
                print(f"== {workload} / {peer} / run {n + 1} of {options.runs}", file=sys.stderr, flush=True)
                by_peer.setdefault(peer, []).append(run_once(peer, workload))
        (OUT / "results.json").write_text(json.dumps(results, indent=1))

    lines = [f"Machine: {results['machine']}", f"Medians of {options.runs} runs."]
    if options.window is not None:
        lines.append(f"Chat window: {options.window} messages in flight per sender.")
    lines.append("")
    for workload, by_peer in results["workloads"].items():
        keys = WORKLOADS[workload][3]
        lines += [f"### {workload}", "", "| server | " + " | ".join(keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for peer, runs in by_peer.items():
            cells = [fmt(median([figure(r, k) for r in runs])) for k in keys]
            lines.append(f"| {peer} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += paired(by_peer, keys[0])
    table = "\n".join(lines)
    (OUT / "tables.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
