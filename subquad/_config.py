"""``subquad.show_config()``: what this installation was built with and will use."""

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from ._cpu_caches import l2_cache_bytes
from ._openmp import build_info, openmp_enabled
from ._threads import available_cpus, blas_info, effective_n_threads


def _version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def config_info():
    """The facts `show_config` prints, as a dict (used by benchmarks too)."""
    build = build_info()
    return {
        "subquad": _version("subquad"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "scikit-learn": _version("scikit-learn"),
        "threadpoolctl": _version("threadpoolctl"),
        "openmp": openmp_enabled(),
        "n_threads": effective_n_threads(None),
        "cpus": available_cpus(),
        "l2_cache_bytes": l2_cache_bytes(),
        "compiler": build["compiler"],
        "flags": build["flags"],
        "debug_build": build["debug"],
        "blas": [
            {
                "vendor": info.get("internal_api"),
                "version": info.get("version"),
                "threading_layer": info.get("threading_layer"),
                "num_threads": info.get("num_threads"),
                "filepath": info.get("filepath"),
            }
            for info in blas_info()
        ],
    }


def show_config(file=None):
    """Print the version, OpenMP and BLAS set-up and build flags of subquad.

    Parameters
    ----------
    file : file-like, default=sys.stdout
        Where to print.
    """
    info = config_info()
    out = file if file is not None else sys.stdout
    openmp = (
        f"enabled, {info['n_threads']} thread(s) by default ({info['cpus']} CPU(s) available)"
        if info["openmp"]
        else "DISABLED: serial build, kernels use one thread"
    )
    lines = [
        f"subquad {info['subquad']}",
        f"  python:        {info['python']} ({info['platform']})",
        f"  numpy:         {info['numpy']}",
        f"  scipy:         {info['scipy']}",
        f"  scikit-learn:  {info['scikit-learn']}",
        f"  threadpoolctl: {info['threadpoolctl']}",
        f"OpenMP: {openmp}",
        f"L2 cache: {info['l2_cache_bytes'] // 1024} KiB per core (sizes the sparse engine's tiles)",
        f"Compiler: {info['compiler']}",
        f"  flags: {info['flags']}{'  (debug build)' if info['debug_build'] else ''}",
        "BLAS:",
    ]
    if not info["blas"]:
        lines.append("  none found by threadpoolctl")
    for blas in info["blas"]:
        lines.append(
            f"  {blas['vendor']} {blas['version']} ({blas['threading_layer']}), "
            f"{blas['num_threads']} thread(s): {blas['filepath']}"
        )
    print("\n".join(lines), file=out)
