"""What the first touch of freshly allocated memory costs on this machine,
by how long ago the process freed memory.

    python bench/host_memory.py              # 128 MiB buffers, 5 repetitions
    python bench/host_memory.py --mib 512

On a guest with free page reporting, memory the guest leaves free for
a few seconds goes back to the host, and the next touch makes the
host fault it in again. Every timed call of `bench/_timing.py` therefore
starts after writing and freeing 1 GiB (`settle`), so that the outputs
both sides allocate come from memory the host still backs. This script
shows why: for each pause between freeing one buffer and allocating the
next, the time to write one byte per 4 KiB page of a new NumPy array (the
page faults and the zeroing, nothing else), and the same after `settle`'s
warming.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from _timing import steal_mark, steal_report, steal_since, timed_call, warm_free_memory

PAUSES = (0.0, 0.5, 3.0)


def first_touch(nbytes):
    buffer = np.empty(nbytes, dtype=np.uint8)
    buffer[::4096] = 1


def page_reporting():
    """The kernel's free page reporting settings, or a note that it has none."""
    params = Path("/sys/module/page_reporting/parameters")
    settings = [f"{name}={(params / name).read_text().strip()}"
                for name in ("page_reporting_order", "min_free_ms", "max_waiting_mib")
                if (params / name).is_file()]
    return "page reporting: " + (", ".join(settings) if settings else "no settings found")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="size of each buffer")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    nbytes = args.mib << 20
    print(f"first touch of a new {args.mib} MiB array, median of {args.repeat}; "
          f"{page_reporting()}")
    print(f"{'pause s':>7} {'cold ms':>8} {'GB/s':>6} {'warmed ms':>10} {'GB/s':>6} "
          f"{'cold/warmed':>11} {'steal':>5}")
    first_touch(nbytes)
    for pause in PAUSES:
        start = steal_mark()
        times = {False: [], True: []}
        for _ in range(args.repeat):
            for warmed in (False, True):
                time.sleep(pause)
                if warmed:
                    warm_free_memory()
                times[warmed].append(timed_call(lambda: first_touch(nbytes))[0])
        cold, warm = (float(np.median(times[w])) for w in (False, True))
        print(f"{pause:>7.1f} {cold * 1e3:>8.1f} {nbytes / cold / 1e9:>6.1f} "
              f"{warm * 1e3:>10.1f} {nbytes / warm / 1e9:>6.1f} {cold / warm:>11.1f} "
              f"{steal_since(start):>5}")
    print(steal_report())


if __name__ == "__main__":
    main()
