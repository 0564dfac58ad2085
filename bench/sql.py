#!/usr/bin/env python3
"""SQL against the key-value store, on bench-server (release): `Catalog` (each instance's
SQLite database) and `KvCatalog` (the same `put` and `get` on the key-value storage).

    python3 bench/sql.py                  # everything, as BENCHMARKS.md quotes it
    python3 bench/sql.py --no-build --runs 1 --duration 5s

1. Acknowledged writes per second through RPC: W closed-loop writers (1, 8, 64), each on an
   instance of its own, each calling `put(key, 100-byte value)` and waiting for the answer,
   which the output gate holds until the write is on disk.
2. Point reads: one client calling `get` of a random key of an instance holding 10,000
   entries, one call at a time: the latency of each answer.
3. Footprint: 1,000 instances that each wrote once, a socket each: the server's RSS per
   instance while they are awake (their databases open), and 15 s after they hibernated
   (closed; jemalloc gives freed pages back within its 10 s decay).

The server runs pinned to core 0, the load generator on core 1, data on this machine's disk.
Results go to target/bench/sql.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile

from common import OUT, RELEASE, ROOT, free_port, wait_for_port

AGENTS = {"sql": "catalog", "kv": "kv-catalog"}


def start_server(data, port, *extra):
    server = subprocess.Popen(
        ["taskset", "-c", "0", RELEASE / "bench-server", "--addr", f"127.0.0.1:{port}",
         "--data-dir", data, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_port(port, server)
    return server


def stop(server):
    server.terminate()
    _, log = server.communicate(timeout=60)
    return log


def loadgen(mode, port, path, *args, server):
    command = ["taskset", "-c", "1", RELEASE / "loadgen", mode, "--url",
               f"ws://127.0.0.1:{port}{path}", "--server-pid", str(server.pid),
               "--stats-url", f"http://127.0.0.1:{port}/agents/bench-stats/x", *args]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"loadgen {mode} failed:\n{run.stderr}")
    return next(json.loads(line[len("RESULT "):]) for line in run.stdout.splitlines()
                if line.startswith("RESULT "))


def with_server(extra, work):
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agents-sql-", dir=ROOT / "target") as data:
        server = start_server(data, port, *extra)
        try:
            result = work(port, server)
        finally:
            log = stop(server)
        errors = [line for line in log.splitlines() if " ERROR " in line]
        if errors:
            sys.exit("the server logged errors:\n" + "\n".join(errors[:10]))
    return result


def writes(store, writers, duration):
    path = f"/agents/{AGENTS[store]}/w"
    return with_server([], lambda port, server: loadgen(
        "sql", port, path, "--op", "put", "--writers", str(writers), "--duration", duration,
        server=server))


def reads(store, duration):
    path = f"/agents/{AGENTS[store]}/r"
    return with_server([], lambda port, server: loadgen(
        "sql", port, path, "--op", "get", "--rows", "10000", "--duration", duration,
        server=server))


def footprint(store, instances):
    path = f"/agents/{AGENTS[store]}/f"
    extra = ["--hibernate-after", "2s", "--max-open-databases", str(instances + 100)]
    return with_server(extra, lambda port, server: loadgen(
        "footprint", port, path, "--instances", str(instances), "--hibernate-wait", "15s",
        server=server))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="runs of each write and read figure")
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--instances", type=int, default=1000)
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "agents-bench"], cwd=ROOT, check=True)
    results = {"writes": [], "reads": [], "footprint": []}
    for run in range(args.runs):
        for writers in (1, 8, 64):
            for store in ("sql", "kv"):
                r = writes(store, writers, args.duration)
                r.update(store=store, run=run)
                results["writes"].append(r)
                print(f"put  {store:3} writers={writers:2}  {r['calls_per_s']:7.0f}/s  "
                      f"p50 {r['latency']['p50_ms']:6.2f} ms  p99 {r['latency']['p99_ms']:6.2f} ms  "
                      f"writes/flush {r.get('writes_per_flush', 0):.1f}  "
                      f"server cpu {r.get('server_cpu_s') or 0:.2f} s")
        for store in ("sql", "kv"):
            r = reads(store, args.duration)
            r.update(store=store, run=run)
            results["reads"].append(r)
            print(f"get  {store:3}             {r['calls_per_s']:7.0f}/s  "
                  f"p50 {r['latency']['p50_ms']:6.3f} ms  p99 {r['latency']['p99_ms']:6.3f} ms")
    for store in ("sql", "kv"):
        r = footprint(store, args.instances)
        r.update(store=store)
        results["footprint"].append(r)
        print(f"footprint {store:3}  {r['instances']} instances: awake "
              f"{r['bytes_per_awake_instance'] / 1024:.1f} KiB each, hibernated "
              f"{r['bytes_per_hibernated_instance'] / 1024:.1f} KiB each "
              f"({r['hibernated_instances']} of them hibernated)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sql.json").write_text(json.dumps(results, indent=2))
    print(f"results: {OUT / 'sql.json'}")


if __name__ == "__main__":
    main()
