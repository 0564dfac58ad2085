#!/usr/bin/env python3
"""Many small agents: the shape of one agent per user or document. N instances of the
examples server's `HibernatingCounter`, one socket each, and N instances of `MyAgent`
reached over HTTP only (no socket); the servers' RSS per agent with every instance awake,
and 30 s after they hibernated (or, without a socket, left memory). Prints the table of
BENCHMARKS.md.

    python3 bench/agents.py                       # 10,000 and 100,000 instances
    python3 bench/agents.py --instances 10000 --no-build

One examples server (`agents-examples`, release) takes at most 16,000 sockets: the machine
allows 20,000 open files per process. Larger runs start several servers and as many load
generators, and add up their memory. Servers are pinned to core 0, generators to core 1.
Instances hibernate `--hibernate-after` (120 s) after their last event: the awake figure is
read once every socket is connected (well within it), the hibernated one 30 s past it.
Raw results go to target/bench/agents.json.

Every socket connects within a few seconds. Were keepalive on, their probes (60 s after, then
every 10 s) would all go out in the same second over loopback, where the kernel drops the
packets past `net.core.netdev_max_backlog` (1,000 by default) and then closes live
connections as dead. The server turns keepalive on only for remote peers; each row records
the kernel's count of such drops during its run (`softnet_drops`, from /proc/net/softnet_stat).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile

from common import OUT, RELEASE, ROOT, free_port, stop, wait_for_port

PER_SERVER = 16_000
HIBERNATE_AFTER = 120


def start_server(data_dir):
    port = free_port()
    argv = [str(RELEASE / "agents-examples"), "--addr", f"127.0.0.1:{port}", "--data-dir", data_dir,
            "--hibernate-after", f"{HIBERNATE_AFTER}s"]
    log = open(OUT / "agents-server.log", "a")
    server = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=log, stderr=log)
    wait_for_port(port, server)
    return server, port


def run(instances, http):
    """One measurement: `instances` agents over as many servers as needed."""
    # Without sockets, one server takes them all.
    servers = 1 if http else -(-instances // PER_SERVER)
    shares = [instances // servers + (1 if i < instances % servers else 0) for i in range(servers)]
    dirs = [tempfile.mkdtemp(prefix="agents-bench-") for _ in shares]
    started = [start_server(d) for d in dirs]
    try:
        # The settle is long enough for every generator to finish connecting (they share a
        # core), yet well within the servers' hibernate-after: the awake figure is read with
        # every instance awake in every server.
        wait = HIBERNATE_AFTER + 30
        procs = []
        for n, ((server, port), share) in enumerate(zip(started, shares)):
            path = "/agents/my-agent/h" if http else "/agents/hibernating-counter/a"
            argv = [str(RELEASE / "loadgen"), "agents", "--url", f"ws://127.0.0.1:{port}{path}",
                    "--instances", str(share), "--first", str(n * PER_SERVER),
                    "--server-pid", str(server.pid), "--settle", "25s",
                    "--hibernate-wait", f"{wait - 25}s", "--timeout", "600s"]
            if http:
                argv += ["--http", "true"]
            procs.append(subprocess.Popen(["taskset", "-c", "1", *argv], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=1200)
            sys.stderr.write(err)
            if proc.returncode != 0:
                raise RuntimeError(f"loadgen agents failed ({proc.returncode})")
            line = next(l for l in out.splitlines() if l.startswith("RESULT "))
            results.append(json.loads(line[len("RESULT "):]))
    finally:
        for server, _ in started:
            stop(server, 60)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    grow = lambda key: sum(r[key] - r["rss_before"] for r in results)
    return {
        "instances": instances,
        "servers": servers,
        "sockets_per_instance": 0 if http else 1,
        "bytes_per_agent_awake": round(grow("rss_awake") / instances),
        "bytes_per_agent_hibernated": round(grow("rss_hibernated") / instances),
        "rss_awake_mib": round(sum(r["rss_awake"] for r in results) / 2**20, 1),
        "rss_hibernated_mib": round(sum(r["rss_hibernated"] for r in results) / 2**20, 1),
        "runs": results,
    }


def softnet_drops():
    """Packets the kernel dropped past netdev_max_backlog so far, all CPUs (None if unknown)."""
    try:
        return sum(int(line.split()[1], 16) for line in open("/proc/net/softnet_stat"))
    except (OSError, IndexError, ValueError):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default="10000,100000", help="counts, comma-separated")
    parser.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    parser.add_argument("--sockets-only", action="store_true", help="skip the instances without a socket")
    options = parser.parse_args()
    counts = [int(n) for n in options.instances.split(",")]
    if shutil.which("taskset") is None:
        sys.exit("taskset is missing (Debian package util-linux)")
    OUT.mkdir(parents=True, exist_ok=True)
    if not options.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "agents-bench", "-p", "agents-examples"],
                       cwd=ROOT, check=True)
    rows = measure(counts, (False,) if options.sockets_only else (False, True))
    lines = ["| instances | servers | sockets each | bytes per agent, awake | bytes per agent, 30 s after hibernating | RSS awake (MiB) | RSS after (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['instances']:,} | {r['servers']} | {r['sockets_per_instance']} | {r['bytes_per_agent_awake']:,} "
                     f"| {r['bytes_per_agent_hibernated']:,} | {r['rss_awake_mib']} | {r['rss_hibernated_mib']} |")
    print("\n".join(lines))


def measure(counts, kinds):
    rows = []
    for count in counts:
        for http in kinds:
            print(f"== {count} instances, {'no socket' if http else 'one socket each'}", file=sys.stderr, flush=True)
            drops = softnet_drops()
            row = run(count, http)
            after = softnet_drops()
            row["softnet_drops"] = None if drops is None or after is None else after - drops
            rows.append(row)
            (OUT / "agents.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
