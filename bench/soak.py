#!/usr/bin/env python3
"""A soak run: the examples server (release) under a steady mixed load for a long while, with
its RSS, open file descriptors and the errors the clients saw sampled over time.

    python3 bench/soak.py                          # 30 minutes
    python3 bench/soak.py --minutes 2 --no-build   # a quick look

The load (`loadgen soak`): 10 chat rooms of 10 members, each sending a message a second and
reading every message of its room; 20 sockets calling `Counter.increment` ten times a second
(each answer checked to be one more than the last: a write that went missing shows); 20
connections a second opened to `MyAgent` and closed; 200 sockets on `HibernatingCounter`
instances that hibernate after 2 s and are woken every 15 s. The server runs pinned to core 0
with `--hibernate-after 2s` and a fresh data directory, the load generator on core 1.

It writes target/bench/soak.json (every sample) and target/bench/soak.svg (RSS and open
files over time), and prints the figures BENCHMARKS.md quotes: RSS after the warm-up and at
the end, its slope, the range of open files, and the error count.
"""

import argparse
import json
import subprocess
import sys
import tempfile

from common import OUT, RELEASE, ROOT, free_port, wait_for_port


def svg(samples, warmup_s):
    """RSS (MiB, left axis) and open files (right axis) over minutes, as a small SVG."""
    width, height, pad = 720, 300, 50
    minutes = [s["s"] / 60 for s in samples]
    rss = [s["rss"] / 2**20 for s in samples]
    fds = [s["fds"] for s in samples]
    x_max = max(minutes[-1], 1e-9)
    rss_max = max(rss) * 1.2 or 1
    fds_max = max(fds) * 1.2 or 1

    def x(m):
        return pad + (width - 2 * pad) * m / x_max

    def y(value, top):
        return height - pad - (height - 2 * pad) * value / top

    def line(values, top, colour):
        points = " ".join(f"{x(m):.1f},{y(v, top):.1f}" for m, v in zip(minutes, values))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'

    warm = x(warmup_s / 60)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{warm:.1f}" y1="{pad}" x2="{warm:.1f}" y2="{height - pad}" stroke="#bbb" '
        f'stroke-dasharray="4"/>',
        f'<text x="{warm + 4:.1f}" y="{pad + 12}" fill="#888">warm-up ends</text>',
        line(rss, rss_max, "#1f77b4"),
        line(fds, fds_max, "#d62728"),
        f'<text x="{pad}" y="{pad - 20}" fill="#1f77b4">RSS, MiB (0 to {rss_max:.0f})</text>',
        f'<text x="{width - pad}" y="{pad - 20}" fill="#d62728" text-anchor="end">'
        f"open files (0 to {fds_max:.0f})</text>",
        f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">minutes</text>',
        f'<text x="{pad}" y="{height - pad + 15}" text-anchor="middle">0</text>',
        f'<text x="{width - pad}" y="{height - pad + 15}" text-anchor="middle">{x_max:.0f}</text>',
        "</svg>",
    ]
    return "\n".join(parts)


def slope_per_hour(samples, key):
    """Least-squares slope of `key` against time, per hour."""
    xs = [s["s"] for s in samples]
    ys = [s[key] for s in samples]
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 3600


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--sample", default="10s", help="how often to sample, like 10s")
    parser.add_argument("--warmup", type=float, default=5, help="minutes left out of the figures")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "-p", "agents-examples", "-p", "agents-bench"],
            cwd=ROOT, check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agents-soak-") as data:
        server = subprocess.Popen(
            ["taskset", "-c", "0", RELEASE / "agents-examples", "--addr", f"127.0.0.1:{port}",
             "--data-dir", data, "--hibernate-after", "2s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(port, server)
            duration = f"{int(args.minutes * 60)}s"
            load = subprocess.run(
                ["taskset", "-c", "1", RELEASE / "loadgen", "soak", "--url", f"ws://127.0.0.1:{port}",
                 "--server-pid", str(server.pid), "--duration", duration, "--sample", args.sample,
                 "--timeout", "60s"],
                capture_output=True, text=True)
        finally:
            server.terminate()
            _, log = server.communicate(timeout=30)
    if load.returncode != 0:
        sys.exit(f"loadgen failed:\n{load.stderr}")
    result = next(json.loads(line[len("RESULT "):]) for line in load.stdout.splitlines()
                  if line.startswith("RESULT "))
    samples = result["samples"]
    warm = [s for s in samples if s["s"] >= args.warmup * 60] or samples
    first, last = warm[0], warm[-1]
    figures = {
        "minutes": args.minutes,
        "warmup_minutes": args.warmup,
        "rss_after_warmup_mib": round(first["rss"] / 2**20, 1),
        "rss_end_mib": round(last["rss"] / 2**20, 1),
        "rss_max_after_warmup_mib": round(max(s["rss"] for s in warm) / 2**20, 1),
        "rss_change_pct": round(100 * (last["rss"] - first["rss"]) / first["rss"], 2),
        "rss_slope_mib_per_hour": round(slope_per_hour(warm, "rss") / 2**20, 2),
        "fds_min": min(s["fds"] for s in warm),
        "fds_max": max(s["fds"] for s in warm),
        "fds_end": last["fds"],
        "totals": result["totals"],
        "server_warnings": sum(1 for line in log.splitlines() if " WARN " in line or " ERROR " in line),
    }
    result["figures"] = figures
    (OUT / "soak.json").write_text(json.dumps(result, indent=1))
    (OUT / "soak.svg").write_text(svg(samples, args.warmup * 60))
    print(json.dumps(figures, indent=1))
    if load.stderr.strip():
        print("the load generator's first errors:\n" + "\n".join(load.stderr.splitlines()[:20]))
    print(f"samples: {OUT / 'soak.json'}, plot: {OUT / 'soak.svg'}")


if __name__ == "__main__":
    main()
