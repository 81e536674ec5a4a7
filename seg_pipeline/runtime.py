"""How a pipeline process collects garbage: fewer full collections, and none over the imported libraries.

A process that runs the pipeline holds 1.5-1.8 million Python objects once Dagster, Great Expectations and
pymc are imported (their modules, classes and functions, plus pytensor's graphs). CPython's cyclic
collector, at its default thresholds (700, 10, 10), runs a full collection every time the objects that
survived grow by a quarter, and each full collection walks every object: measured on the 1M-row benchmark
file (a quarter's process, imports and 8 quarters), 16 collections of over 50 ms took 8.1-9.5 s of a
49-57 s process, most of them during the imports and then one of ~1.3 s every third quarter
(bench/results.md, "Garbage collection").

The entry points (the code location, seg_pipeline.definitions, which every Dagster process loads, and the
`seg-pipeline` CLI) call tune_gc(); each heavy import runs inside importing(), which pauses the collector
while the library loads and then moves what it loaded into the collector's permanent generation
(gc.freeze), so later collections no longer walk it. Objects made afterwards are collected as before:
only the young generation's threshold is raised, from 700 to 10,000 allocations. Set SEG_PIPELINE_GC=python
to keep the interpreter's own settings (both functions then do nothing); any value other than `python` or
`pipeline` (the default) is an error that says so.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import threading

THRESHOLDS = (10_000, 10, 10)
_LOCK = threading.RLock()  # importing() may nest
_unfreeze_registered = False


SETTINGS = {"": True, "pipeline": True, "python": False}  # SEG_PIPELINE_GC -> whether the pipeline's settings apply


def enabled() -> bool:
    """Whether the pipeline's settings apply: SEG_PIPELINE_GC unset, empty or `pipeline`; not with `python`."""
    value = os.environ.get("SEG_PIPELINE_GC", "")
    if value.strip().lower() not in SETTINGS:
        raise ValueError(
            f"SEG_PIPELINE_GC={value!r} is not a setting: use 'python' (keep the interpreter's garbage collection "
            "settings) or 'pipeline' (the default, also when unset)"
        )
    return SETTINGS[value.strip().lower()]


def tune_gc() -> None:
    """Raise the young generation's threshold to THRESHOLDS (never lowers one that is already higher)."""
    if not enabled():
        return
    current = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(current, THRESHOLDS, strict=True)))


@contextlib.contextmanager
def importing():
    """Around an import of a large library: no collection while it loads, then gc.freeze(), so the loaded
    modules are never walked again. The collector is paused process-wide, so only around an import."""
    if not enabled():
        yield
        return
    global _unfreeze_registered
    with _LOCK:
        if not _unfreeze_registered:
            # frozen objects are skipped by the collection at interpreter exit too; unfrozen, that collection
            # frees them (else DuckDB's bindings report its objects in cycles as leaked, on stderr)
            atexit.register(gc.unfreeze)
            _unfreeze_registered = True
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
