"""Size of the CPU's per-core L2 cache, which the tiled kernels size their
working sets by."""

import functools
import glob
import os

# Where the operating system does not say (no Linux sysfs): the smallest L2
# of the x86-64 server cores these kernels were tuned on.
DEFAULT_L2_BYTES = 1 << 20
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _parse_size(text):
    text = text.strip().upper()
    if text and text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


@functools.lru_cache(maxsize=None)
def l2_cache_bytes():
    """Bytes of the L2 (data or unified) cache of CPU 0, read from Linux's
    sysfs; `DEFAULT_L2_BYTES` where that is missing or unreadable."""
    for folder in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(folder, "level")) as f:
                level = int(f.read())
            with open(os.path.join(folder, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(folder, "size")) as f:
                size = _parse_size(f.read())
        except (OSError, ValueError):
            continue
        if level == 2 and kind in ("Unified", "Data") and size > 0:
            return size
    return DEFAULT_L2_BYTES
