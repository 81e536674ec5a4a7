"""seg_pipeline: customer segmentation for retailers, as Dagster assets over DuckDB.

Importing the package changes nothing in the process: environment settings the pipeline wants (OpenMP's
passive wait policy, Great Expectations' analytics off) are set by the `seg-pipeline` entry point and the
scripts before the libraries load (see cli.main and scripts/*.sh), and GX's analytics flag right before GX
is imported. The code location (seg_pipeline.definitions) and the CLI set the garbage collector's
thresholds, and heavy imports are frozen out of its reach (seg_pipeline/runtime.py).
"""
