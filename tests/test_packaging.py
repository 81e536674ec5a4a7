"""The package deploys: the wheel carries the SQL files, the data contracts, the segment catalogue and the report
templates, and the package's own loaders read them both from the checkout (editable install) and from the
installed wheel's layout. The wheel is built offline (`pip wheel --no-deps --no-build-isolation`, with the
setuptools of the test extra), from a copy of the sources so that the checkout gets no build/ folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from seg_pipeline import settings
from seg_pipeline.ml.naming import load_catalogue
from seg_pipeline.quality.contracts import load_contract
from seg_pipeline.sql import load_sql

REPO_ROOT = Path(__file__).resolve().parent.parent
SQL_NAMES = sorted(p.stem for p in (REPO_ROOT / "sql").glob("*.sql"))
CONTRACT_NAMES = sorted(p.stem for p in (REPO_ROOT / "data_contracts").glob("*.yaml"))
TEMPLATE_NAMES = sorted(p.name for p in (REPO_ROOT / "seg_pipeline" / "insights" / "templates").glob("*.j2"))
# what the build reads: pyproject.toml and the folders its [tool.setuptools] tables name
BUILD_INPUTS = ["pyproject.toml", "README.md", "seg_pipeline", "sql", "data_contracts"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        p = REPO_ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("seg_pipeline-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_the_checkout_has_the_files_the_wheel_must_carry():
    assert {"cleaned_sales", "customer_features", "raw_transactions"} <= set(SQL_NAMES)
    assert {"cleaned_sales", "customer_features", "segment_assignments"} <= set(CONTRACT_NAMES)
    assert TEMPLATE_NAMES == ["report.html.j2", "report.md.j2"]


def test_wheel_carries_sql_contracts_catalogue_and_templates(wheel):
    names = wheel_names(wheel)
    expected = (
        {f"seg_pipeline/sql_files/{n}.sql" for n in SQL_NAMES}
        | {f"seg_pipeline/contracts_files/{n}.yaml" for n in CONTRACT_NAMES}
        | {"seg_pipeline/segments.yaml"}
        | {f"seg_pipeline/insights/templates/{n}" for n in TEMPLATE_NAMES}
    )
    assert expected <= names, sorted(expected - names)


def test_wheel_carries_every_module_and_nothing_outside_the_package(wheel):
    """The package list in pyproject.toml is explicit (package-dir mappings rule out `packages.find`): a new
    subpackage that is not added there would be missing from the wheel."""
    names = wheel_names(wheel)
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "seg_pipeline").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert {n.split("/")[0] for n in names} == {"seg_pipeline", wheel.name.split("-py")[0] + ".dist-info"}


def test_loaders_read_the_checkout_files():
    """The editable install: importlib.resources finds the top-level sql/ and data_contracts/ folders."""
    assert settings.SQL_DIR == REPO_ROOT / "sql"
    assert settings.CONTRACTS_DIR == REPO_ROOT / "data_contracts"
    assert settings.PACKAGE_DIR == REPO_ROOT / "seg_pipeline"
    assert settings.DEFAULT_HOME == REPO_ROOT / ".seg_home"
    for n in SQL_NAMES:
        assert load_sql(n) == (REPO_ROOT / "sql" / f"{n}.sql").read_text(encoding="utf-8").strip().rstrip(";")
    for n in CONTRACT_NAMES:
        assert load_contract(n).path == REPO_ROOT / "data_contracts" / f"{n}.yaml"
    assert load_catalogue().segments


INSTALLED_CHECK = textwrap.dedent(
    """
    import json, sys
    import seg_pipeline
    from seg_pipeline import settings
    from seg_pipeline.insights import report
    from seg_pipeline.ml.naming import load_catalogue
    from seg_pipeline.quality.contracts import load_contract
    from seg_pipeline.sql import load_sql

    sql_names, contract_names = json.loads(sys.argv[1])
    print(json.dumps({
        "package": seg_pipeline.__file__,
        "in_checkout": settings.IN_CHECKOUT,
        "default_home": str(settings.DEFAULT_HOME),
        "home": str(settings.home_dir()),
        "sql": {n: load_sql(n) for n in sql_names},
        "contracts": {n: str(load_contract(n).path) for n in contract_names},
        "segments": len(load_catalogue().segments),
        "templates": sorted(report._env()["md"].list_templates()),
    }))
    """
)


def test_loaders_read_the_installed_wheel(wheel, tmp_path):
    """The wheel's layout, unpacked as an installer would into site-packages (first on sys.path, so it wins
    over the editable install), read by the package's own loaders, from a directory that is no checkout."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SEG_PIPELINE_HOME"}
    env.update(PYTHONPATH=str(site), GX_ANALYTICS_ENABLED="false")
    proc = subprocess.run(
        [sys.executable, "-c", INSTALLED_CHECK, json.dumps([SQL_NAMES, CONTRACT_NAMES])],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["package"]).parent == site / "seg_pipeline"
    assert got["in_checkout"] is False
    # no checkout: the default home is .seg_home in the current directory
    assert got["default_home"] == ".seg_home" and Path(got["home"]) == (work / ".seg_home").resolve()
    for n in SQL_NAMES:
        assert got["sql"][n] == load_sql(n)
    assert got["contracts"] == {n: str(site / "seg_pipeline" / "contracts_files" / f"{n}.yaml") for n in CONTRACT_NAMES}
    assert got["segments"] == len(load_catalogue().segments)
    assert set(TEMPLATE_NAMES) <= set(got["templates"])
