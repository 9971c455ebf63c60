"""Build subquad's Cython + OpenMP extensions.

Every ``subquad/**/*.pyx`` becomes an extension module of the same dotted name.

Environment variables read at build time:

SUBQUAD_DEBUG=1
    Cython bounds, wraparound and initialisation checks on, ``-O0 -g``.
SUBQUAD_NO_OPENMP=1
    Build serial kernels even if the compiler supports OpenMP.
SUBQUAD_PORTABLE=1
    Do not tune for the build machine's CPU (no ``-march=native``); use this
    when building wheels for other machines.
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PACKAGE = "subquad"

OPENMP_PROBE = textwrap.dedent(
    """\
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _compiler_command():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def _try_compile(source, compile_args, link_args):
    """Compile and link `source` with the C compiler Python was built with."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(source)
        exe = Path(tmp) / "probe"
        cmd = _compiler_command() + [*compile_args, str(src), "-o", str(exe), *link_args]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0


def openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or None if unavailable."""
    if _env_flag("SUBQUAD_NO_OPENMP"):
        return None
    extra_cflags = os.environ.get("CPPFLAGS", "").split() + os.environ.get("CFLAGS", "").split()
    extra_ldflags = os.environ.get("LDFLAGS", "").split()
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag; libomp (e.g. `brew install
        # libomp`) is found through CPPFLAGS/LDFLAGS, see README.
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    elif sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    for compile_args, link_args in candidates:
        if _try_compile(OPENMP_PROBE, extra_cflags + compile_args, extra_ldflags + link_args):
            return compile_args, link_args
    return None


def optimisation_flags(debug):
    if sys.platform == "win32":
        return ["/O2"]
    if debug:
        return ["-O0", "-g"]
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    if not _env_flag("SUBQUAD_PORTABLE"):
        for tuning in (["-march=native"], ["-mcpu=native"]):
            if _try_compile("int main(void){return 0;}", tuning, []):
                flags += tuning
                break
    return flags


def _c_string(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def extensions():
    debug = _env_flag("SUBQUAD_DEBUG")
    openmp = openmp_flags()
    if openmp is None:
        warnings.warn(
            "subquad: no working OpenMP found; building SERIAL kernels that use "
            "one core. On macOS install libomp and set CPPFLAGS/LDFLAGS as the "
            "README explains; elsewhere use a compiler with OpenMP (gcc).",
            stacklevel=1,
        )
        omp_compile, omp_link = [], []
    else:
        omp_compile, omp_link = openmp

    compile_args = optimisation_flags(debug) + omp_compile
    build_info = [
        ("SUBQUAD_BUILD_COMPILER", _c_string(" ".join(_compiler_command()))),
        ("SUBQUAD_BUILD_FLAGS", _c_string(" ".join(compile_args))),
        ("SUBQUAD_BUILD_DEBUG", "1" if debug else "0"),
        ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
    ]
    modules = []
    for pyx in sorted((HERE / PACKAGE).rglob("*.pyx")):
        rel = pyx.relative_to(HERE)
        name = ".".join(rel.with_suffix("").parts)
        modules.append(
            Extension(
                name,
                [str(rel)],
                include_dirs=[numpy.get_include()],
                define_macros=build_info,
                extra_compile_args=compile_args,
                extra_link_args=omp_link,
            )
        )
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": not debug,
        "cpow": True,
        "embedsignature": True,
    }
    return cythonize(
        modules,
        compiler_directives=directives,
        nthreads=os.cpu_count() or 1,
        quiet=True,
    )


class ParallelBuildExt(build_ext):
    """Compile extensions on all cores; a source build otherwise takes minutes."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


setup(ext_modules=extensions(), cmdclass={"build_ext": ParallelBuildExt})

