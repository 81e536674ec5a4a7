"""The data contracts, installed as the package data of `seg_pipeline.contracts_files` (see pyproject.toml).

This file only makes the folder a regular package, which setuptools' editable install needs for a
package-dir mapping; the code reads the `.yaml` files with importlib.resources (seg_pipeline/settings.py).
"""
