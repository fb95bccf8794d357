"""Peak memory and time of hashing a huge build context (issue 12).

A build context holding one sparse file of SIZE GiB (no disk used) is hashed
the way `fleet diff` / `fleet apply` do, in a child process so its peak RSS is
its own: `python bench/context_hash_bench.py [SIZE_GIB ...]`. Before the
streaming hash, fleet read each file whole (peak RSS about the file's size, a
MemoryError past the machine's memory); now the peak stays flat.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from pathlib import Path
from reconciler.load.loader import load
load(Path(sys.argv[1]))
"""


def run(size_gib: float) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM scratch\n")
        with open(ctx / "huge.bin", "wb") as fh:
            fh.truncate(int(size_gib * 1024**3))
        path = Path(tmp) / "fleet.yaml"
        path.write_text("fleet: bench\nagents:\n  a:\n    build: {context: ./ctx}\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", CHILD, str(path)], check=True, env={"FLEET_HOME": str(Path(tmp) / "home")})
        took = time.monotonic() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return took, max(peak, before) // 1024


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1", "4"]:
        took, mib = run(float(arg))
        print(f"context with a {arg} GiB file: {took:.1f} s, peak RSS {mib} MiB (max of the runs so far)")
