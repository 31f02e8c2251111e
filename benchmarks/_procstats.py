"""Wall time and peak memory of one child process (and everything it starts).

Every command is started by a small, fresh launcher process (``python -I -S -c ...``), which times
it and reaps it with ``os.wait4``. The launcher matters: on Linux a child's ``ru_maxrss`` starts
from the high-water mark of the memory of the process that forked it (``exec`` records the old
address space's peak), so a tool spawned directly by this benchmark, after it has held GiBs of
tensors while comparing outputs, would "inherit" that peak. Forked by the launcher, it inherits the
launcher's ~10 MiB instead.

Two memory figures are taken for every run:

* ``peak_rss_bytes``: the ``ru_maxrss`` that ``os.wait4`` returns for *that* child. The kernel keeps
  it per process (the child's own high-water mark, or that of the largest descendant it waited
  for), so it is exact, is not a sample, and is isolated per measurement. This is unlike
  ``resource.getrusage(RUSAGE_CHILDREN)``, whose ``ru_maxrss`` is a maximum over *all* children
  the caller ever waited for, so a second measurement in the same process would report the first
  one's peak if that was larger.
* ``tree_rss_peak_bytes``: the largest sum of RSS over the child and all its descendants seen by a
  psutil poller (every ``poll_interval`` seconds). It catches tools that fan out into several
  processes at once, but it is a sample (short peaks can be missed) and it double-counts pages
  shared between processes. None when psutil is not installed.
* ``tree_anon_peak_bytes``: the same sampler's largest sum of *anonymous* memory (RSS minus the
  file-backed and shared pages, psutil's ``rss - shared``): the memory the tool really allocated.

``other_cpu_s`` tells whether the figures can be trusted: the CPU seconds that the whole machine
spent busy during the run minus those of the measured child. On an otherwise idle machine it is
close to 0; a large value means something else competed for the cores and the wall time is inflated.

The first two count file pages that the process has memory-mapped and touched (safetensors files
are read through ``mmap``), since those are part of RSS; the kernel can drop such clean pages under
memory pressure, which is why the anonymous figure is reported too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, Mapping, Sequence

try:  # psutil ships with accelerate; the tree sampler is optional
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


@dataclass(frozen=True)
class ProcStats:
    """What one measured run cost.

    Attributes:
        returncode: exit status (negative: killed by that signal).
        wall_s: seconds from just before the process was started to just after it was reaped
            (taken in the launcher, so the launcher's own start-up is not counted).
        peak_rss_bytes: kernel high-water mark of the child's resident set (see module doc).
        tree_rss_peak_bytes: largest sampled sum of RSS over the process tree, or None.
        tree_anon_peak_bytes: largest sampled sum of anonymous RSS over the process tree, or None.
        user_s, sys_s: CPU seconds used by the child (and its waited-for descendants).
        other_cpu_s: busy CPU seconds of the whole machine during the run not used by the child
            (contention from other processes; None without psutil).
    """

    returncode: int
    wall_s: float
    peak_rss_bytes: int
    tree_rss_peak_bytes: int | None
    tree_anon_peak_bytes: int | None
    user_s: float
    sys_s: float
    other_cpu_s: float | None = None


class _TreeSampler(threading.Thread):
    """Poll the RSS of all descendants of a process (not the process itself); keep the largest sums."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.anon_peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            total = anon = 0
            try:
                procs = root.children(recursive=True)
            except psutil.Error:
                return  # the root is gone
            for p in procs:
                try:
                    mem = p.memory_info()
                    total += mem.rss
                    anon += mem.rss - getattr(mem, "shared", 0)
                except psutil.Error:
                    pass  # a descendant exited between listing and reading
            self.peak = max(self.peak, total)
            self.anon_peak = max(self.anon_peak, anon)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()


# Runs in the launcher: start the command, reap it with wait4, write the figures as JSON.
_LAUNCHER = """
import json, os, subprocess, sys, time
cmd, result_path = json.loads(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
proc = subprocess.Popen(cmd)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
proc.returncode = os.waitstatus_to_exitcode(status)
with open(result_path, "w") as f:
    json.dump(dict(returncode=proc.returncode, wall_s=wall, maxrss_kib=usage.ru_maxrss,
                   user_s=usage.ru_utime, sys_s=usage.ru_stime), f)
"""


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    log: IO | None = None,
    poll_interval: float = 0.02,
) -> ProcStats:
    """Run ``cmd`` to completion (through a fresh launcher process) and measure it.

    Args:
        cmd: the command line (no shell).
        env: environment for the command (default: inherit).
        cwd: working directory for the command.
        log: open file that receives the command's stdout and stderr (default: discarded).
        poll_interval: seconds between psutil samples of the process tree.

    Returns:
        The run's :class:`ProcStats`. A failing command is not an error here: check ``returncode``
        (-1000 when the launcher itself failed before reporting).
    """
    out = log if log is not None else subprocess.DEVNULL
    fd, result_path = tempfile.mkstemp(prefix="procstats_", suffix=".json")
    os.close(fd)
    launcher_cmd = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(list(cmd)), result_path]
    busy_before = _machine_busy_s()
    try:
        launcher = subprocess.Popen(launcher_cmd, env=dict(env) if env is not None else None, cwd=cwd,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = None
        if psutil is not None:
            sampler = _TreeSampler(launcher.pid, poll_interval)
            sampler.start()
        try:
            # The launcher's rusage covers itself and the command it reaped (its CPU is ~0.02 s).
            _, _, launcher_usage = os.wait4(launcher.pid, 0)
        except BaseException:
            os.killpg(launcher.pid, 9)  # the launcher leads its own session: this ends the command too
            launcher.wait()
            raise
        finally:
            if sampler is not None:
                sampler.stop()
        launcher.returncode = 0  # already reaped: keep Popen from waiting again
        busy_after = _machine_busy_s()
        if sampler is not None:
            sampler.join()
        with open(result_path) as f:
            text = f.read()
        r = json.loads(text) if text else dict(returncode=-1000, wall_s=0.0, maxrss_kib=0, user_s=0.0, sys_s=0.0)
    finally:
        os.unlink(result_path)
    other = None
    if busy_before is not None and busy_after is not None:
        other = max(0.0, busy_after - busy_before - launcher_usage.ru_utime - launcher_usage.ru_stime)
    return ProcStats(
        returncode=r["returncode"],
        wall_s=r["wall_s"],
        peak_rss_bytes=r["maxrss_kib"] * 1024,  # Linux reports KiB
        tree_rss_peak_bytes=sampler.peak if sampler is not None else None,
        tree_anon_peak_bytes=sampler.anon_peak if sampler is not None else None,
        user_s=r["user_s"],
        sys_s=r["sys_s"],
        other_cpu_s=other,
    )


def _machine_busy_s() -> float | None:
    """CPU seconds all cores have spent busy since boot (not idle, not waiting for I/O)."""
    if psutil is None:
        return None
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def format_bytes(n: int | None) -> str:
    """Human-readable size in binary units (``"1.23 GiB"``); ``"-"`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"  # pragma: no cover
