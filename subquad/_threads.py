"""One meaning of ``n_threads`` everywhere, and BLAS kept single-threaded
inside OpenMP regions."""

import numbers
import os

from threadpoolctl import ThreadpoolController

from ._openmp import openmp_enabled, openmp_max_threads


def available_cpus():
    """Number of CPUs this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity API
        return os.cpu_count() or 1


def _omp_num_threads_env():
    """First value of OMP_NUM_THREADS (it may be a per-level list), or None."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        parsed = int(value)
    except ValueError:
        return None
    return parsed if parsed > 0 else None


def effective_n_threads(n_threads=None):
    """Resolve the ``n_threads`` parameter to a thread count.

    Parameters
    ----------
    n_threads : int or None
        ``None``: every CPU this process may use, capped by OMP_NUM_THREADS
        and by a threadpoolctl OpenMP limit when set. ``-1``: every CPU this
        process may use. ``k > 0``: ``k`` threads.

    Returns
    -------
    int
        At least 1; always 1 when subquad was built without OpenMP.

    Raises
    ------
    TypeError
        If `n_threads` is not None or an integer.
    ValueError
        If `n_threads` is 0 or below -1.
    """
    if n_threads is not None and (
        isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral)
    ):
        raise TypeError(
            f"n_threads must be None, -1 or a positive integer, got {n_threads!r} "
            f"of type {type(n_threads).__name__}"
        )
    if n_threads is not None and (n_threads == 0 or n_threads < -1):
        raise ValueError(f"n_threads must be None, -1 or a positive integer, got {n_threads}")
    if not openmp_enabled():
        return 1
    cpus = available_cpus()
    if n_threads is None:
        limits = [cpus, openmp_max_threads()]
        env = _omp_num_threads_env()
        if env is not None:
            limits.append(env)
        return max(1, min(limits))
    if n_threads == -1:
        return cpus
    return int(n_threads)


# Below about this many multiply-adds per thread, starting and joining a
# parallel region costs more than the work it shares.
MIN_WORK_PER_THREAD = 1 << 20


def threads_for_work(n_threads, work):
    """Resolved `n_threads`, reduced so every thread gets a worthwhile share
    of `work` (a count of multiply-adds or comparable operations)."""
    return max(1, min(effective_n_threads(n_threads), int(work) // MIN_WORK_PER_THREAD))


_controller = None


def _blas_controller():
    # Inspecting the loaded libraries costs milliseconds: do it once, after
    # scipy's BLAS has been loaded by subquad's own extensions.
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def blas_threads_limited(limit=1):
    """Context manager capping BLAS threads, e.g. around a ``prange`` whose
    body calls BLAS, so that OpenMP and BLAS threads do not oversubscribe."""
    return _blas_controller().limit(limits=limit, user_api="blas")


def blas_info():
    """threadpoolctl's description of each BLAS library in this process."""
    # A library can be reached through several handles; report it once.
    unique = {}
    for info in _blas_controller().info():
        if info.get("user_api") == "blas":
            unique.setdefault(info.get("filepath"), info)
    return list(unique.values())
