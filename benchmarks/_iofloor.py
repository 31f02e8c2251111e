"""The I/O floor of a merge, measured in the same run as the tools: what no merge can go below.

A merge reads every input checkpoint once and writes one output of the base's size. The floor is the
time to do exactly that and nothing else, from a warm page cache: read every input file once
(``os.readv`` into one reused buffer) and write as many bytes as the base holds, flushed to disk
(``fsync``, as hf_time's outputs are). Each tool's wall time is then reported as a multiple of it.
Also: how long ``hf-time --help`` and importing the merge path take (start-up cost per command).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 64 << 20


def read_all(files: list[Path]) -> float:
    """Seconds to read every byte of ``files`` once (into one reused buffer)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start = time.perf_counter()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.readv(fd, [view]) > 0:
                pass
        finally:
            os.close(fd)
    return time.perf_counter() - start


def write_bytes(n: int, folder: Path) -> float:
    """Seconds to write ``n`` bytes to a new file in ``folder`` and fsync it (the file is removed)."""
    block = os.urandom(1 << 20) * (CHUNK >> 20)
    fd, path = tempfile.mkstemp(dir=folder, prefix="iofloor-")
    try:
        start = time.perf_counter()
        left = n
        while left > 0:
            left -= os.write(fd, block[: min(left, len(block))])
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)


def io_floor(inputs: list[Path], out_bytes: int, folder: Path, repeats: int = 2) -> dict:
    """Min over ``repeats`` of the read and the write floor; both in seconds, and their sum."""
    reads = [read_all(inputs) for _ in range(repeats)]
    writes = [write_bytes(out_bytes, folder) for _ in range(repeats)]
    total_in = sum(p.stat().st_size for p in inputs)
    return dict(read_s=min(reads), write_s=min(writes), floor_s=min(reads) + min(writes), bytes_read=total_in,
                bytes_written=out_bytes)


def startup(hf_time_bin: str, repeats: int = 3) -> dict:
    """Seconds of ``hf-time --help`` and of importing the merge path (min over ``repeats``)."""
    def timed(cmd: list[str]) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            best = min(best, time.perf_counter() - start)
        return best

    return dict(help_s=timed([hf_time_bin, "--help"]),
                import_merge_path_s=timed([sys.executable, "-c", "import hf_time.api"]),
                python_s=timed([sys.executable, "-c", "pass"]))
