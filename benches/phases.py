#!/usr/bin/env python3
"""Where a call's CPU goes, by phase: reads `perf script -F comm,ip,sym` of a
`perf record --call-graph dwarf` of one proxy (benches/ab.sh AB_PROFILE=…)
and gives each sample to the innermost frame that names a phase (a DLP scan
inside a guard is `dlp`, not `guards`), kernel and user apart, in µs per call.

usage: perf script -i FILE -F comm,ip,sym | python3 benches/phases.py US_PER_CALL
  US_PER_CALL: the proxy's CPU µs per call in that run (the samples' total).
"""
import collections
import sys

# Innermost first: the first of these a frame names, walking from the leaf
# up, is the sample's phase.
PHASES = [
    ("dlp scan", "engines::dlp"),
    ("json-rpc parse", "jsonrpc::parse"),
    ("guards (other)", "FilterChain::run"),
    ("audit record", "pipeline::recording::"),
    ("header and URL DLP", "header_dlp::"),
    ("admission", "pipeline::admission::"),
    ("judging (other)", "pipeline::judging::"),
    ("reply path", "pipeline::reply::"),
    ("forwarding (own code)", "pipeline::forwarding::"),
    ("request path (own code)", "pipeline::service::"),
    ("pingora (HTTP/1 both sides)", "pingora_"),
    ("tokio", "tokio::"),
]


def main():
    per_call = float(sys.argv[1])
    agg = collections.Counter()
    stack, comm = [], None

    def flush():
        if not stack:
            return
        kernel = stack[0][0].startswith("ffffffff")
        phase = "other"
        for _, frame in stack:
            hit = next((name for name, pat in PHASES if pat in frame), None)
            if hit:
                phase = hit
                break
        if comm == "warden-audit":
            phase = "audit writer thread"
        agg[(phase, "kernel" if kernel else "user")] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack = []
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.strip().split(None, 1)
        stack.append((parts[0], parts[1] if len(parts) > 1 else ""))
    flush()
    total = sum(agg.values()) or 1
    print(f"| phase | where | µs per call | share |")
    print("|---|---|---|---|")
    for (phase, where), n in sorted(agg.items(), key=lambda x: -x[1]):
        print(f"| {phase} | {where} | {per_call * n / total:.1f} | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
