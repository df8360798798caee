#!/usr/bin/env python3
"""Turns benches/peers.sh results into a table, BENCHMARKS.md and a chart.

Input: one JSON object per line (a load generator's output, tagged with
scenario, system, run, the server's peak RSS and CPU seconds). Output: a
table of medians and same-run eddy/peer ratios on stdout, BENCHMARKS.md
(machine, versions, exact commands, table, goals, chart, and the notes in
benches/peers-notes.md), and an SVG chart (matplotlib).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
from collections import defaultdict

PEER = {"ingest": "NATS JetStream", "fan-in": "Mosquitto QoS1"}
SYSTEMS = {
    "ingest": ["eddy durable", "eddy received", "eddy durable, batched", "NATS JetStream"],
    "fan-in": ["eddy durable", "eddy received", "Mosquitto QoS1"],
}


def kind(scenario):
    return "ingest" if scenario.startswith("ingest") else "fan-in"


def rate(d):
    return d.get("records_per_s", d.get("acked_per_s", 0.0))


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def sh(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception:  # a missing tool leaves its line empty
        return "?"


def eddy_commit(rows):
    """The commit the results were measured on (peers.sh records it in each
    line); results from before it did say HEAD at render time, and say so."""
    commits = sorted({r["eddy_commit"] for r in rows if "eddy_commit" in r})
    if commits and all("eddy_commit" in r for r in rows):
        return ", ".join(commits)
    return f"{sh('git rev-parse --short HEAD')} (HEAD when this report was rendered; not recorded in the results)"


def machine(rows):
    model = sh("lscpu | sed -n 's/^Model name: *//p'")
    mem = sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'")
    disk = sh("df -h --output=source,fstype,size \"$PWD\" | tail -1")
    return [
        f"CPU: {model}, {os.cpu_count()} cores (virtual machine, shared with other builds)",
        f"memory: {mem}; disk: {disk}",
        f"OS: {platform.platform()}",
        f"eddy: {eddy_commit(rows)} ({sh('rustc --version')}, release profile)",
        f"NATS: {sh('nats-server --version')}; Mosquitto: {sh('mosquitto -h | head -1')}",
        f"peer clients: {sh('go version')} with Debian's nats.go and paho.mqtt.golang",
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ingest-s", type=int, default=5)
    ap.add_argument("--fanin-s", type=int, default=20)
    ap.add_argument("--markdown")
    ap.add_argument("--chart")
    args = ap.parse_args()

    rows = [json.loads(l) for l in open(args.results) if l.strip()]
    by = defaultdict(list)
    for r in rows:
        by[(r["scenario"], r["system"])].append(r)
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))

    table = []
    for sc in scenarios:
        k = kind(sc)
        peer_runs = {r["run"]: r for r in by[(sc, PEER[k])]}
        for system in SYSTEMS[k]:
            runs = by[(sc, system)]
            if not runs:
                continue
            ratios = []
            for r in runs:
                p = peer_runs.get(r["run"])
                if p is None or system == PEER[k]:
                    continue
                if k == "ingest":
                    ratios.append(rate(r) / rate(p) if rate(p) else float("nan"))
                else:
                    ratios.append(r["p99_ms"] / p["p99_ms"] if p["p99_ms"] else float("nan"))
            table.append(
                dict(
                    scenario=sc,
                    system=system,
                    kind=k,
                    n=len(runs),
                    rate=median([rate(r) for r in runs]),
                    p50=median([r["p50_ms"] for r in runs]),
                    p99=median([r["p99_ms"] for r in runs]),
                    rss_mb=median([r["server_rss_peak_kb"] for r in runs]) / 1024,
                    # fan-in: the largest reading while every device was
                    # connected (the load generator samples it in its window)
                    rss_connected_mb=median([r.get("server_rss_kb") or 0 for r in runs]) / 1024,
                    cpu=median([r["server_cpu_s"] for r in runs]),
                    errors=sum(r.get("errors", 0) for r in runs),
                    setup=median([r.get("setup_per_s", 0) for r in runs]),
                    ratio=median(ratios) if ratios else None,
                )
            )

    header = (
        "| case | system | msgs/s | ack p50 ms | ack p99 ms | server RSS MB, all connected "
        "| server peak RSS MB | server CPU s | errors | eddy/peer (same run) |"
    )
    lines = [header, "|" + "---|" * 10]
    for t in table:
        ratio = ""
        if t["ratio"] is not None:
            what = "throughput" if t["kind"] == "ingest" else "p99 (over 1: eddy slower)"
            ratio = f"{t['ratio']:.2f}× {what}"
        # ingest runs have no "all connected" window: a dash, not 0.0
        connected = f"{t['rss_connected_mb']:.1f}" if t["rss_connected_mb"] else "—"
        lines.append(
            f"| {t['scenario']} | {t['system']} | {t['rate']:,.0f} | {t['p50']:.2f} | {t['p99']:.2f} "
            f"| {connected} | {t['rss_mb']:.1f} | {t['cpu']:.1f} | {t['errors']} "
            f"| {ratio} |"
        )
    text = "\n".join(lines)
    print(text)

    goals = []
    for t in table:
        if t["kind"] == "ingest" and t["system"].startswith("eddy"):
            verdict = "meets" if t["ratio"] >= 3 else "misses"
            goals.append(
                f"- {t['scenario']}, {t['system']}: {t['ratio']:.2f}× NATS JetStream "
                f"({verdict} the ≥ 3× goal)"
            )
    for t in table:
        if t["scenario"] == "fan-in 10000 devices" and t["system"].startswith("eddy"):
            ok_p99 = "meets" if t["p99"] <= 20 else "misses"
            ok_rss = "meets" if t["rss_connected_mb"] <= 64 else "misses"
            goals.append(
                f"- 10,000 devices, {t['system']}: p99 {t['p99']:.1f} ms ({ok_p99} ≤ 20 ms), "
                f"server RSS {t['rss_connected_mb']:.0f} MB with every device connected "
                f"({ok_rss} ≤ 64 MB; peak since start, set-up included, {t['rss_mb']:.0f} MB), "
                f"set-up {t['setup']:.0f} connections/s"
            )
    print("\n".join(goals))

    if args.chart:
        chart(table, scenarios, args.chart)
    if args.markdown:
        notes_path = os.path.join(os.path.dirname(os.path.abspath(args.results)), "peers-notes.md")
        notes = open(notes_path).read() if os.path.exists(notes_path) else ""
        md = [
            "# Benchmarks: eddy side by side with NATS JetStream and Mosquitto",
            "",
            "Generated by `benches/peers.sh` (raw results: `benches/peers-results.jsonl`). "
            "Medians of "
            f"{args.runs} runs per case; eddy and its peer take turns, each run on a fresh server "
            "and data dir; ratios are medians of same-run pairs. Server and load generator share "
            "the machine, and so did other developers' builds: absolute numbers are noisy, "
            "ratios less so.",
            "",
            "## Machine",
            "",
            *[f"- {m}" for m in machine(rows)],
            "",
            "## Commands",
            "",
            "```sh",
            f"INGEST_S={args.ingest_s} FANIN_S={args.fanin_s} benches/peers.sh {args.runs}",
            "# which runs, per case and run:",
            "eddy bench produce --connections P --batch 1 --window 1 --acks durable|received "
            f"--record-bytes 100 --partitions 1 --duration-s {args.ingest_s} --json    # sync",
            "eddy bench produce --connections P --producer --linger-ms 0 --window W "
            f"--acks durable|received --record-bytes 100 --partitions 1 --duration-s {args.ingest_s} "
            "--json    # windowed",
            "peerbench nats-ingest -producers P -window W -record-bytes 100 "
            f"-duration-s {args.ingest_s}    # JetStream file store, publish acks",
            "eddy bench devices --connections N --interval-ms 1000 "
            f"--duration-s {args.fanin_s} --acks durable|received --server-pid PID --json",
            f"peerbench mqtt-devices -connections N -interval-ms 1000 -duration-s {args.fanin_s}"
            " -server-pid PID    # QoS 1, wait for PUBACK",
            "```",
            "",
            "P ∈ {1, 8} producers (one connection each). Sync (W = 1): each side publishes one "
            "record, waits for its ack, publishes the next (eddy: one `Produce` request of one "
            "record; NATS: `js.Publish`). Windowed (W = 64, and W = 4000, nats.go's default "
            "for async publishing): each producer publishes record "
            "after record and keeps at most W unacknowledged, waiting for the oldest ack "
            "before the next publish — NATS through `js.PublishAsync` with "
            "`PublishAsyncMaxPending(W)`, eddy through the client library's batching "
            "`Producer` (`--producer`: records accumulate per partition into batches, sent as "
            "soon as one of 4 batch slots in flight is free, linger 0 ms, acks per record). "
            "Latency is per record, from publish to its ack, on both sides. JetStream's file "
            "store acknowledges before any fsync; eddy `durable` acknowledges after "
            "`fdatasync`, `received` after the append in memory. "
            "N ∈ {1,000, 10,000} devices, one connection each, one 64-byte reading "
            "per second, one in flight; the server's RSS \"all connected\" is the largest "
            "reading the load generator took (every second) while every device was connected "
            "and sending, the peak is the process's high-water mark (connection set-up "
            "included). All servers use TLS with the same certificate.",
            "",
            "## Results",
            "",
            text,
            "",
            "## Goals",
            "",
            *goals,
            "",
            f"![throughput and fan-in latency](benches/{os.path.basename(args.chart or 'peers.svg')})",
            "",
            notes,
        ]
        # The hand-written part after MARKER (eddy's own benchmarks) stays.
        kept = ""
        if os.path.exists(args.markdown):
            old = open(args.markdown).read()
            if MARKER in old:
                kept = "\n" + old[old.index(MARKER):]
        with open(args.markdown, "w") as f:
            f.write("\n".join(md).rstrip() + "\n" + kept)


MARKER = (
    "<!-- Everything below is written by hand; benches/peers_report.py keeps it "
    "when it rewrites the part above. -->"
)


def chart(table, scenarios, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = {
        "eddy durable": "#1f6fb4",
        "eddy received": "#7fb3e0",
        "eddy durable, batched": "#0b3c6b",
        "NATS JetStream": "#3a9a4a",
        "Mosquitto QoS1": "#c9732c",
    }
    for ax, k, metric, label in (
        (a, "ingest", "rate", "records/s (median)"),
        (b, "fan-in", "p99", "ack latency p99, ms (median)"),
    ):
        scs = [s for s in scenarios if kind(s) == k]
        width = 0.8 / len(SYSTEMS[k])
        for i, system in enumerate(SYSTEMS[k]):
            xs, ys = [], []
            for j, sc in enumerate(scs):
                t = next((t for t in table if t["scenario"] == sc and t["system"] == system), None)
                if t:
                    xs.append(j + (i - (len(SYSTEMS[k]) - 1) / 2) * width)
                    ys.append(t[metric])
            ax.bar(xs, ys, width, label=system, color=colors[system])
        ax.set_xticks(range(len(scs)))
        ax.set_xticklabels([s.replace("ingest ", "").replace("fan-in ", "") for s in scs], fontsize=8)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        if k == "fan-in":
            ax.set_yscale("log")
        ax.set_title("durable ingest, 100 B records" if k == "ingest" else "device fan-in, 1 reading/s each")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
