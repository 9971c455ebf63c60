"""Wall-clock timing shared by the benchmark scripts, and how much of the
machine the host took while it ran."""

import argparse
import time

import numpy as np

# After a call, OpenBLAS keeps its worker threads spinning for 2^28 cycles
# (about 0.1 s here) before they sleep. On 2 cores a spinning worker takes
# one core from whatever runs next: a subquad kernel timed straight after a
# NumPy BLAS call ran up to 1.7x slower. Each timed call therefore starts
# after this pause, so that no callable pays for the thread pool of the one
# timed before it; `best_time_after` measures that cost on purpose.
SETTLE_SECONDS = 0.25

# The machines these scripts run on are Firecracker guests booted with free
# page reporting: memory the guest has left free for a few seconds goes back
# to the host, and touching it again costs several times as much as memory
# the guest kept (bench/host_memory.py). A call that allocates a large
# output would pay for how long ago the calls before it freed theirs. Before
# each timed call this many bytes are therefore written and freed, so that
# every call, ours and the baselines', draws on memory the host still backs,
# as on a machine without page reporting. A script's `--cold-memory`
# option (`add_cold_memory_option`) turns it off, to see the host as it is.
_warm_bytes = 1 << 30

# Jiffies that passed during timed calls, summed over all CPUs: those the
# hypervisor gave to other guests ("steal"), and all of them.
_timed_ticks = np.zeros(2, dtype=np.int64)


def _cpu_ticks():
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat, or
    None where there is no such file."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields[7], sum(fields)


class _ColdMemory(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        global _warm_bytes
        _warm_bytes = 0


def add_cold_memory_option(parser):
    """Give a script's `parser` the `--cold-memory` option, which stops the
    warming of free memory before timed calls."""
    parser.add_argument("--cold-memory", action=_ColdMemory, nargs=0,
                        help="do not warm the guest's free memory before each timed call "
                             "(see bench/host_memory.py)")


def memory_warming():
    """What `settle` does to memory, for a script's header."""
    if _warm_bytes > 0:
        return f"{_warm_bytes / 2**30:g} GiB written and freed before each timed call"
    return "memory not warmed before timed calls (cold, as the host serves it)"


def warm_free_memory():
    """Write and free `_warm_bytes` (none with `--cold-memory`), so that
    the guest's free memory is backed by the host again."""
    if _warm_bytes > 0:
        np.ones(_warm_bytes // 4, dtype=np.float32)


def settle():
    """Back the guest's free memory, then wait out the BLAS workers."""
    warm_free_memory()
    time.sleep(SETTLE_SECONDS)


def timed_call(fn):
    """(wall seconds, result) of one call, adding the jiffies that passed
    to `_timed_ticks` (read outside the timed span)."""
    before = _cpu_ticks()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    after = _cpu_ticks()
    if before is not None and after is not None:
        _timed_ticks[:] += np.subtract(after, before)
    return elapsed, result


def steal_mark():
    """The tick counts so far, for `steal_since`."""
    return _timed_ticks.copy()


def _steal_share(since=None):
    """Share of the machine's CPU time that the hypervisor gave to other
    guests during the calls timed since `since` (a `steal_mark`; default:
    all), or None where nothing was measured. A shared host shows up here
    when its noise decides a ratio."""
    steal, total = _timed_ticks - (0 if since is None else since)
    return steal / total if total > 0 else None


def steal_since(mark):
    """The steal share of the calls timed since `mark`, as a table cell."""
    share = _steal_share(mark)
    return "-" if share is None else f"{share:.0%}"


def steal_report():
    """One line: the steal share over every call timed so far."""
    share = _steal_share()
    if share is None:
        return "host steal during the timed calls: not measured (no /proc/stat)"
    return (f"host steal during the timed calls: {share:.1%} of all CPU time "
            f"(/proc/stat, {_timed_ticks[1]} jiffies)")


def best_times(fns, repeats):
    """(best wall time, last result) of each callable. Repetitions are
    interleaved, so that a slow spell of a shared machine hits all alike,
    and each call starts after `settle()`."""
    best, results = [np.inf] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            settle()
            elapsed, results[i] = timed_call(fn)
            best[i] = min(best[i], elapsed)
    return list(zip(best, results))


def best_time(fn, repeats):
    """(best wall time, last result) of one callable."""
    return best_times([fn], repeats)[0]


def best_time_after(prelude, fn, repeats):
    """Best wall time of `fn` started straight after `prelude` returns, with
    no pause: what a caller alternating the two sees."""
    best = np.inf
    for _ in range(repeats):
        settle()
        prelude()
        best = min(best, timed_call(fn)[0])
    return best
