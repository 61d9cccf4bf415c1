"""Shared helpers of the benchmarks: interleaved timing, tables, the machine's description.

Absolute times on a shared machine are noise, so every benchmark measures the
things it compares in the same run, interleaved round by round (a slow moment
hurts all of them alike), and reports medians and ratios of those medians.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any, TypeVar

T = TypeVar("T")

#: Every algorithm a Better Auth server signs with.
ALGORITHMS: tuple[str, ...] = ("EdDSA", "ES256", "ES512", "RS256", "PS256")


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, without an event loop.

    The package's verification does no I/O once the key set is loaded, so its
    coroutine finishes on the first step; timing it this way leaves the event
    loop's own cost out of the number.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("the coroutine suspended: the key set was not loaded")


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a timed batch (as timeit does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def interleaved(
    candidates: Mapping[str, Callable[[int], float]], rounds: int
) -> dict[str, list[float]]:
    """Time each candidate once per round, in a rotating order; return its samples.

    A candidate is ``run(n) -> seconds per operation`` and chooses its own batch.
    """
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        gc.collect()
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            with quiet_gc():
                samples[name].append(candidates[name](index))
    return samples


def timed_loop(operation: Callable[[], object], batch: int) -> Callable[[int], float]:
    """A candidate for :func:`interleaved`: ``batch`` calls of ``operation``, µs per call."""

    def run(_round: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(batch):
            operation()
        return (time.perf_counter_ns() - start) / batch / 1000

    return run


def timed_calls(operation: Callable[[], object], batch: int) -> Callable[[int], float]:
    """A candidate for :func:`interleaved`: ``batch`` calls timed one by one, median µs.

    For operations of tens of µs and more: a timer interrupt or a neighbour's
    burst lands on a few calls, and the median leaves them out.
    """
    clock = time.perf_counter_ns

    def run(_round: int) -> float:
        times = []
        for _ in range(batch):
            start = clock()
            operation()
            times.append(clock() - start)
        return statistics.median(times) / 1000

    return run


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def paired_median(values: Sequence[float], base: Sequence[float], *, ratio: bool) -> float:
    """Median over rounds of ``value - base`` (or ``value / base``), same-round pairs."""
    if ratio:
        return statistics.median(v / b for v, b in zip(values, base, strict=True))
    return statistics.median(v - b for v, b in zip(values, base, strict=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def verdict(passed: bool) -> str:
    """The word a result table uses for a target."""
    return "met" if passed else "**missed**"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def machine(distributions: Sequence[str] = ()) -> str:
    """One paragraph naming the machine, Python and the versions that matter."""
    packages = ("starlette-betterauth", "cryptography", "pyjwt", "starlette", *distributions)
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    stolen = stolen_since(_STARTED)
    steal = "" if stolen is None else f"; CPU time stolen by the hypervisor in the run {stolen:.0%}"
    return (
        f"{_cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()} ({sys.implementation.name}); {versions}; "
        f"load average at the end {load_average()}{steal}"
    )


def cpu_ticks() -> tuple[int, int] | None:
    """All CPUs' (stolen, total) time in ticks so far (Linux ``/proc/stat``), else None.

    On a virtual machine, "steal" is time a CPU was ready to run this guest but
    the hypervisor ran another one: the benchmark's clock keeps going meanwhile.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    # user, nice, system, idle, iowait, irq, softirq, steal
    ticks = [int(value) for value in fields[1:9]]
    return ticks[7], sum(ticks)


def stolen_since(since: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen since the ``since`` reading of :func:`cpu_ticks` (0 to 1)."""
    now = cpu_ticks()
    if since is None or now is None or now[1] <= since[1]:
        return None
    return (now[0] - since[0]) / (now[1] - since[1])


_STARTED = cpu_ticks()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews results)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
