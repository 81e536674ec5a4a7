"""The process's garbage collection (seg_pipeline/runtime.py): what the entry points set, and how an import is
kept out of the collector's reach."""

import gc
import json
import os
import subprocess
import sys

import pytest

from seg_pipeline import runtime

PROBE = (
    "import gc, json, seg_pipeline.definitions; "
    "print(json.dumps({'threshold': gc.get_threshold(), 'frozen': gc.get_freeze_count(), 'enabled': gc.isenabled()}))"
)


def _probe(**env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false", **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_the_code_location_tunes_the_collector_and_freezes_what_it_imported():
    tuned = _probe(SEG_PIPELINE_GC="")
    assert tuned["threshold"] == list(runtime.THRESHOLDS)
    assert tuned["frozen"] > 100_000  # Dagster and the assets: hundreds of thousands of objects
    assert tuned["enabled"]  # collection goes on for what the runs make


def test_seg_pipeline_gc_python_keeps_the_interpreters_settings():
    kept = _probe(SEG_PIPELINE_GC="python")
    assert kept["threshold"] == [700, 10, 10]
    assert kept["frozen"] == 0
    assert kept["enabled"]


@pytest.fixture
def collector():
    """Leaves the test process's collector as it found it."""
    threshold, was_enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*threshold)
    (gc.enable if was_enabled else gc.disable)()


def test_importing_pauses_the_collector_then_freezes_and_restores_it(collector, monkeypatch):
    monkeypatch.delenv("SEG_PIPELINE_GC", raising=False)
    gc.enable()
    before = gc.get_freeze_count()
    with runtime.importing():
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]  # tracked objects created "during the import"
        with runtime.importing():  # nested: still paused, and does not re-enable
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(made)
    gc.disable()  # a collector someone disabled stays disabled
    with runtime.importing():
        pass
    assert not gc.isenabled()


def test_tune_gc_never_lowers_a_threshold(collector, monkeypatch):
    monkeypatch.delenv("SEG_PIPELINE_GC", raising=False)
    gc.set_threshold(50_000, 5, 20)
    runtime.tune_gc()
    assert gc.get_threshold() == (50_000, 10, 20)
    monkeypatch.setenv("SEG_PIPELINE_GC", "python")
    gc.set_threshold(700, 10, 10)
    runtime.tune_gc()
    assert gc.get_threshold() == (700, 10, 10)


def test_an_unknown_seg_pipeline_gc_value_is_an_error_that_names_the_settings(monkeypatch):
    monkeypatch.setenv("SEG_PIPELINE_GC", "off")
    with pytest.raises(ValueError, match=r"SEG_PIPELINE_GC='off' is not a setting: use 'python'.*'pipeline'"):
        runtime.tune_gc()
    monkeypatch.setenv("SEG_PIPELINE_GC", " Pipeline ")
    assert runtime.enabled()


def test_the_cli_refuses_an_unknown_seg_pipeline_gc_value_before_doing_anything(tmp_path, collector):
    from click.testing import CliRunner

    from seg_pipeline import cli

    home = tmp_path / "home"
    r = CliRunner().invoke(cli.main, ["run", "--home", str(home)], env={"SEG_PIPELINE_GC": "off"})
    assert r.exit_code == 1
    assert "Error: SEG_PIPELINE_GC='off' is not a setting" in r.output
    assert not home.exists()  # nothing was created or run
