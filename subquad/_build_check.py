"""Turn a failed import of the compiled layer into instructions."""

from pathlib import Path


def raise_build_error(error):
    here = Path(__file__).resolve().parent
    in_source_tree = (here.parent / "setup.py").exists()
    hint = (
        "It looks like you are importing subquad from its source tree, which "
        "holds no compiled modules: run Python from another directory, or "
        "build in place with `pip install -e . --no-build-isolation`."
        if in_source_tree
        else "Reinstall it with `pip install --force-reinstall subquad`."
    )
    raise ImportError(
        f"subquad's compiled extensions could not be imported ({error}). "
        f"subquad has not been built correctly. Build it with "
        f"`pip install .` from a clone (needs a C compiler; OpenMP is optional). "
        f"{hint}"
    ) from error
