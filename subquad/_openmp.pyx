"""What the compiled layer was built with: OpenMP, compiler, flags."""

cdef extern from *:
    const char* SUBQUAD_BUILD_COMPILER
    const char* SUBQUAD_BUILD_FLAGS
    int SUBQUAD_BUILD_DEBUG


def openmp_enabled():
    """True when the extensions were compiled with OpenMP support."""
    return bool(SUBQUAD_OPENMP_ENABLED)


def openmp_max_threads():
    """``omp_get_max_threads()`` as the OpenMP runtime sees it (1 if serial)."""
    return omp_get_max_threads()


def build_info():
    """Compiler, flags and debug mode the extensions were built with."""
    return {
        "compiler": SUBQUAD_BUILD_COMPILER.decode(),
        "flags": SUBQUAD_BUILD_FLAGS.decode(),
        "debug": bool(SUBQUAD_BUILD_DEBUG),
        "openmp": bool(SUBQUAD_OPENMP_ENABLED),
    }
