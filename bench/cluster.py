#!/usr/bin/env python3
"""Cluster mode on PostgreSQL: the three figures of BENCHMARKS.md.

    python3 bench/cluster.py                      # chat, takeover and fanout
    python3 bench/cluster.py --only chat --runs 5 --no-build

- chat: the chat 32x32 workload (32 sockets in one ChatRoom, each sending 500 messages that
  reach all 32) against one examples server on sled, one cluster node, and three nodes with the
  room's sockets spread over them: deliveries per server CPU-second (every node's CPU added
  up), and latency. Servers pinned to core 0, the generator to core 1.
- takeover: three nodes (lease --lease), writers incrementing one Counter through every node;
  every few seconds the owner is killed with SIGKILL (and started again once another node took
  over). Each kill's takeover time is the gap from the last acknowledged write to the first on
  the new owner; the run also checks that the count kept every acknowledged increment.
- fanout: one ChatRoom of --sockets sockets over six gateway nodes (a process holds at most
  20,000 open files), each fed by a generator of its own; one message broadcast to all of
  them: the time until the last socket has it, and the nodes' memory per socket.

PostgreSQL is Debian's, started here: initdb in a temporary directory, as the user postgres
when run as root, on a free port of 127.0.0.1, fsync on. Raw results go to
target/bench/cluster.json.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, RELEASE, ROOT, free_port, stop

SERVER_CORE, LOADGEN_CORE = "0", "1"


class Postgres:
    """A PostgreSQL server of the benchmark's own."""

    def __init__(self):
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = versions[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="agents-bench-pg-"))
        self.run_as = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.tool("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=300"
        self.tool("pg_ctl", "start", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o", options)
        self.databases = 0

    def tool(self, name, *args):
        return subprocess.run([*self.run_as, str(self.bin / name), *args], check=True,
                              capture_output=True, text=True, cwd=self.dir).stdout

    def psql(self, db, sql):
        return self.tool("psql", "-X", "-q", "-A", "-t", "-h", str(self.dir), "-p", str(self.port),
                         "-U", "postgres", "-d", db, "-c", sql).strip()

    def database(self):
        self.databases += 1
        name = f"bench{self.databases}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return name, f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def close(self):
        subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "stop", "-D", str(self.dir / "data"),
                        "-m", "immediate"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """An examples server, alone or as a node of a cluster."""

    def __init__(self, url=None, node_id=None, port=None, lease="10s", core=None, nofile=None):
        self.port = port or free_port()
        self.data = tempfile.mkdtemp(prefix="agents-bench-node-")
        argv = [str(RELEASE / "agents-examples"), "--addr", f"127.0.0.1:{self.port}", "--data-dir", self.data,
                "--hibernate-after", "600s"]
        if url:
            argv += ["--cluster-url", url, "--node-id", node_id, "--cluster-lease", lease]
        if nofile:
            argv = ["prlimit", f"--nofile={nofile}", "--", *argv]
        if core is not None:
            argv = ["taskset", "-c", core, *argv]
        self.log = open(OUT / "cluster-node.log", "a")
        env = {**os.environ, "RUST_LOG": "warn,agents_examples=info"}
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            if "examples on http://" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("a node did not start")
        else:
            raise RuntimeError(f"a node exited with {self.process.wait()}")
        # Keep reading its log, so it never blocks on a full pipe.
        subprocess.Popen(["cat"], stdin=self.process.stdout, stdout=self.log)
        # taskset and prlimit exec the server: the process is the server.
        self.pid = self.process.pid

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def rss(self):
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def kill(self):
        self.process.kill()
        self.process.wait()

    def close(self):
        stop(self.process)
        shutil.rmtree(self.data, ignore_errors=True)


def loadgen(mode, urls, pids=(), core=LOADGEN_CORE, **flags):
    argv = ["taskset", "-c", core, str(RELEASE / "loadgen"), mode, "--url", ",".join(urls)]
    if pids:
        argv += ["--server-pid", ",".join(str(pid) for pid in pids)]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def run_json(argv):
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr[-2000:]}")
    return result_of(result.stdout)


def result_of(stdout):
    """The report loadgen prints last (`RESULT {...}`)."""
    line = [line for line in stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def chat(postgres, runs):
    """Deliveries per server CPU-second: one server on sled, one cluster node, three nodes."""
    rows = {"single": [], "cluster-1": [], "cluster-3": []}
    for run in range(runs):
        for setup in rows:
            if setup == "single":
                nodes = [Node(core=SERVER_CORE)]
            else:
                _, url = postgres.database()
                count = 1 if setup == "cluster-1" else 3
                nodes = [Node(url, f"n{i}", core=SERVER_CORE) for i in range(count)]
            try:
                room = f"/agents/chat-room/bench{run}"
                report = run_json(loadgen("chat", [n.url(room) for n in nodes], [n.pid for n in nodes],
                                          conns=32, senders=32, messages=500))
            finally:
                for node in nodes:
                    node.close()
            rows[setup].append(report)
            print(f"chat {setup} run {run}: {report['deliveries_per_cpu_s']:.0f} deliveries per CPU-second, "
                  f"p50 {report['latency']['p50_ms']} ms", flush=True)
    return rows


def owner(postgres, db, agent, name):
    found = postgres.psql(db, f"""SELECT a.owner_node FROM agents_rs_agents a JOIN agents_rs_nodes n
        ON n.node_id = a.owner_node AND n.incarnation = a.owner_inc AND n.lease_until > now()
        WHERE a.agent = '{agent}' AND a.name = '{name}'""")
    return int(found[1:]) if found.startswith("n") else None


def takeover(postgres, kills, lease):
    """Kills the counter's owner `kills` times under writers on every node."""
    db, url = postgres.database()
    nodes = [Node(url, f"n{i}", lease=lease) for i in range(3)]
    seconds = kills * (float(lease.rstrip("s")) + 4) + 6
    writers = subprocess.Popen(loadgen("takeover", [n.url("/agents/counter/t") for n in nodes], core="1",
                                       writers=6, duration=f"{seconds:.0f}s"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        for kill in range(kills):
            victim = None
            for _ in range(100):
                victim = owner(postgres, db, "counter", "t")
                if victim is not None:
                    break
                time.sleep(0.05)
            if victim is None:
                raise RuntimeError("the counter has no live owner")
            port = nodes[victim].port
            nodes[victim].kill()
            # Another node takes over once the lease ran out; then the node comes back.
            time.sleep(float(lease.rstrip("s")) + 2)
            nodes[victim] = Node(url, f"n{victim}", port=port, lease=lease)
            time.sleep(1)
            print(f"takeover: killed node {victim} ({kill + 1}/{kills})", flush=True)
        out, err = writers.communicate(timeout=seconds + 120)
        if writers.returncode != 0:
            raise RuntimeError(f"loadgen takeover failed: {err[-2000:]}")
        report = result_of(out)
    finally:
        if writers.poll() is None:
            writers.kill()
        for node in nodes:
            node.close()
    print(f"takeover: gaps {report['gaps_ms']} ms, lost {report['lost']}", flush=True)
    return report


def fanout(postgres, sockets, gateways):
    """One room of `sockets` sockets over `gateways` nodes; one broadcast to all."""
    db, url = postgres.database()
    nodes = [Node(url, f"g{i}", nofile=20_000) for i in range(gateways)]
    generators = []
    try:
        time.sleep(1)
        idle = sum(node.rss() for node in nodes)
        per = sockets // gateways
        room = "/agents/chat-room/big?announce=false"
        # The owner is the node of the first socket: the generator of gateway 0 starts first.
        for i, node in enumerate(nodes):
            conns = per if i < gateways - 1 else sockets - per * (gateways - 1)
            argv = loadgen("fanout", [node.url(room)], core="1", conns=conns, first=i * per + 1,
                           send="true" if i == 0 else "false", timeout="900s")
            argv = ["prlimit", "--nofile=20000", "--", *argv]
            generator = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            generators.append(generator)
            if i == 0:
                # Gateway 0 acquires the room before the others dial it.
                ready = generator.stdout.readline()
                assert "ready" in ready, ready
        for generator in generators[1:]:
            ready = generator.stdout.readline()
            assert "ready" in ready, f"a generator failed: {generator.stderr.read()[-2000:]}"
        time.sleep(2)
        loaded = sum(node.rss() for node in nodes)
        started = time.time()
        generators[0].stdin.write("go\n")
        generators[0].stdin.flush()
        reports = []
        for generator in generators:
            out, err = generator.communicate(timeout=900)
            if generator.returncode != 0:
                raise RuntimeError(f"a fanout generator failed: {err[-2000:]}")
            reports.append(result_of(out))
        wall = time.time() - started
    finally:
        for generator in generators:
            if generator.poll() is None:
                generator.kill()
        for node in nodes:
            node.close()
    last_ms = max(report["last_ms"] for report in reports)
    report = {
        "sockets": sockets,
        "gateways": gateways,
        "broadcast_last_ms": last_ms,
        "broadcast_p50_ms": statistics.median(r["latency"]["p50_ms"] for r in reports),
        "nodes_rss_idle": idle,
        "nodes_rss_loaded": loaded,
        "bytes_per_socket": (loaded - idle) / sockets,
        "harness_wall_s": wall,
    }
    print(f"fanout: {sockets} sockets over {gateways} gateways: the last had the broadcast after "
          f"{last_ms:.0f} ms; {report['bytes_per_socket']:.0f} B per socket on the nodes", flush=True)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="chat,takeover,fanout")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease", default="2s")
    parser.add_argument("--sockets", type=int, default=100_000)
    parser.add_argument("--gateways", type=int, default=6)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "agents-bench", "-p", "agents-examples"],
                       cwd=ROOT, check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    postgres = Postgres()
    results = {}
    try:
        only = args.only.split(",")
        if "chat" in only:
            results["chat"] = chat(postgres, args.runs)
        if "takeover" in only:
            results["takeover"] = takeover(postgres, args.kills, args.lease)
        if "fanout" in only:
            results["fanout"] = fanout(postgres, args.sockets, args.gateways)
    finally:
        postgres.close()
    (OUT / "cluster.json").write_text(json.dumps(results, indent=2))
    if "chat" in results:
        for setup, reports in results["chat"].items():
            per_cpu = statistics.median(r["deliveries_per_cpu_s"] for r in reports)
            p50 = statistics.median(r["latency"]["p50_ms"] for r in reports)
            p99 = statistics.median(r["latency"]["p99_ms"] for r in reports)
            print(f"| {setup} | {per_cpu:,.0f} | {p50} | {p99} |")
    if "takeover" in results:
        gaps = sorted(results["takeover"]["gaps_ms"])
        if gaps:
            p99 = gaps[min(len(gaps) - 1, round(0.99 * (len(gaps) - 1)))]
            print(f"takeover: {len(gaps)} kills, p50 {statistics.median(gaps):.0f} ms, p99 {p99:.0f} ms, "
                  f"lost {results['takeover']['lost']}")


if __name__ == "__main__":
    main()
