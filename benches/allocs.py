#!/usr/bin/env python3
"""Heap allocations per call by the code that makes them.

Reads `perf script -F ip,sym` of a recording of the allocator's uprobes
(benches/ab.sh, AB_ALLOCS=1; every event recorded) on stdin; argv: the
calls made during the recording. Prints the
allocations per call by the innermost frame outside the allocator's own
machinery, and by the innermost frame of Warden's own crates.
"""
import collections
import re
import sys

calls = max(int(sys.argv[1]), 1)

# Frames that only pass an allocation on: the allocator, Rust's alloc
# glue, and the generic containers that grow.
PLUMBING = re.compile(
    r"^(mi_|_mi_|__rust_|__rdl_|alloc::|<alloc::|core::|<core::|hashbrown::|<hashbrown::"
    r"|smallvec::|<smallvec::|bytes::|<bytes::|std::|<std::|\[unknown\]|\{|<?T as alloc|"
    r"<\[T\]|<T as|<str as|<\(|clone|to_vec|to_owned|reserve|grow|with_capacity|push|extend|"
    r"from_iter|collect|insert|new|alloc|realloc|malloc|do_alloc|finish_grow|allocate|"
    r"box_new|into_boxed|exchange_malloc)"
)
OWN = re.compile(r"warden_")

samples = sys.stdin.read().split("\n\n")
by_site = collections.Counter()
by_own = collections.Counter()
total = 0
for sample in samples:
    frames = []
    for line in sample.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and re.match(r"^[0-9a-f]+$", parts[0]):
            frames.append(parts[1].split("+0x")[0])
    if not frames:
        continue
    total += 1
    site = next((f for f in frames if not PLUMBING.match(f)), frames[-1])
    own = next((f for f in frames if OWN.search(f)), "(no Warden frame)")
    by_site[site[:140]] += 1
    by_own[own[:140]] += 1

scale = 1 / calls
print(f"  recorded: {total * scale:.1f} allocations per call")
print("  by the innermost caller outside the allocator's machinery:")
for site, n in by_site.most_common(25):
    print(f"    {n * scale:6.2f}  {site}")
print("  by the innermost frame of Warden's crates:")
for site, n in by_own.most_common(25):
    print(f"    {n * scale:6.2f}  {site}")
