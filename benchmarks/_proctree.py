"""Samples a process tree from /proc (Linux): resident memory per process and CPU seconds of the whole tree.

Benchmarks run the measured job in a child process and watch it from outside, so the figures include
Beam's worker processes and their own children (the extraction timeout's subprocess), not just the driver.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class _Proc:
    parent: int
    rss: int
    cpu_ticks: int
    command: str


def _snapshot() -> dict[int, _Proc]:
    procs: dict[int, _Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                head, tail = handle.read().rsplit(")", 1)
            fields = tail.split()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        procs[int(entry)] = _Proc(parent=int(fields[1]), rss=int(fields[21]) * _PAGE,
                                  cpu_ticks=int(fields[11]) + int(fields[12]), command=command)
    return procs


def _children(procs: dict[int, _Proc]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.parent, []).append(pid)
    return children


def _descendants(procs: dict[int, _Proc], children: dict[int, list[int]], root: int) -> list[int]:
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            out.append(pid)
        stack.extend(children.get(pid, []))
    return out


@dataclass
class TreeSample:
    seconds: float  # since the sampler started
    rss: int  # resident bytes of the whole tree
    cpu_seconds: float  # CPU seconds the tree has used so far (processes that ended included)


@dataclass
class ProcessTreeSampler:
    """Watches `root` and its descendants every `interval` seconds until `stop()`.

    `worker_marker` names the command line of the processes counted as workers (Beam's SDK harness);
    a worker's memory includes its own children.
    """

    root: int
    interval: float = 0.1
    worker_marker: str = "sdk_worker_main"
    samples: list[TreeSample] = field(default_factory=list)
    peak_rss: int = 0
    peak_worker_rss: int = 0
    peak_other_rss: int = 0  # the tree minus its workers at that moment: the driver (and runner) side
    workers_seen: int = 0

    def __post_init__(self) -> None:
        self._cpu_by_pid: dict[int, int] = {}
        self._workers: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = time.perf_counter()

    def start(self) -> ProcessTreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        procs = _snapshot()
        children = _children(procs)
        tree = _descendants(procs, children, self.root)
        for pid in tree:
            self._cpu_by_pid[pid] = max(self._cpu_by_pid.get(pid, 0), procs[pid].cpu_ticks)
        total = sum(procs[pid].rss for pid in tree)
        worker_rss = 0
        for pid in tree:
            if self.worker_marker in procs[pid].command:
                self._workers.add(pid)
                rss = sum(procs[p].rss for p in _descendants(procs, children, pid))
                self.peak_worker_rss = max(self.peak_worker_rss, rss)
                worker_rss += rss
        self.workers_seen = len(self._workers)
        self.peak_rss = max(self.peak_rss, total)
        self.peak_other_rss = max(self.peak_other_rss, total - worker_rss)
        cpu = sum(self._cpu_by_pid.values()) / _TICK
        self.samples.append(TreeSample(time.perf_counter() - self._started, total, cpu))

    def cpu_between(self, start: float, stop: float) -> float:
        """CPU seconds the tree used between two times (seconds since the sampler started)."""
        def at(moment: float) -> float:
            before = [s.cpu_seconds for s in self.samples if s.seconds <= moment]
            return before[-1] if before else 0.0

        return at(stop) - at(start)

    def _loop(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)


def run_sampled(command: list[str], interval: float = 0.1) -> tuple[int, float, float, ProcessTreeSampler]:
    """Run `command` as a child process while sampling its tree; returns (exit code, start time, wall s, sampler)."""
    import subprocess

    clock = time.time()
    process = subprocess.Popen(command)
    sampler = ProcessTreeSampler(process.pid, interval=interval).start()
    process.wait()
    sampler.stop()
    return process.returncode, clock, time.time() - clock, sampler
