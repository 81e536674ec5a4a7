"""Great Expectations over DuckDB (seg_pipeline/quality/gx_duckdb.py) and the contract files.

- planted rows: a table with known bad rows; every rule type the contracts use reports exactly the planted
  count, and the rules the data satisfies pass;
- an upstream-bug sentinel: GX's SQL data source over a plain duckdb-engine connection still returns empty
  results, which is why gx_duckdb.py gives every query its own cursor. When that test fails, the
  workaround may go;
- every file in data_contracts/ loads and every rule builds into a GX expectation; malformed contracts are
  refused with the file's name.
"""

from __future__ import annotations

import re

import duckdb
import pytest

from seg_pipeline import settings
from seg_pipeline.ml.naming import segment_names
from seg_pipeline.quality import gx_duckdb
from seg_pipeline.quality.contracts import ContractError, Rule, load_contract
from seg_pipeline.quality.gate import run_contract
from tests.quality.conftest import ASSETS

# The run parameters each asset passes to its contract (see the gate(...) calls in seg_pipeline/assets/*.py).
PARAMS = {
    "raw_transactions": {},
    "cleaned_sales": {"rejected_table": "__stage_rejected_sales", "raw_rows": 100, "batch_files": "__batch_files"},
    "customer_features": {"lookback_days": 365},
    "scaled_matrix": {"customer_features_rows": 100, "mean_tolerance": 1e-6},
    "clustering_model": {"business_k_min": 4, "business_k_max": 6, "silhouette_floor": 0.2, "min_cluster_share": 0.01},
    "segment_assignments": {
        "customer_features_rows": 100,
        "segment_names": segment_names(),
        "model_version": "v1",
        "summary_table": "__stage_segment_summary",
    },
    "segment_migration_history": {
        "from_segments": segment_names() + ["new", "returning"],
        "to_segments": segment_names() + ["lapsed"],
        "quarter": "2011-07-01",
        "quarter_start": "2011-07-01",
        "features_table": "customer_features",
        "previous_customers": 10,
        "current_customers": 12,
        "to_model_version": "v1",
    },
}

# ---------------------------------------------------------------------------------------------- planted rows

# id: 3 twice (2 duplicate rows); name: 2 NULLs; amount: 0 and -1 break "amount > 0" (strict); color: 2 values
# outside the set; amount >= 6 on 2 rows (the SQL rule); 6 rows in all.
PLANTED = """
CREATE TABLE planted AS SELECT * FROM (VALUES
    (1, 'a',  5.0, 'red'),
    (2, 'b',  0.0, 'red'),
    (3, NULL, -1.0, 'blue'),
    (3, 'd', 10.0, 'purple'),
    (5, NULL, 7.0, 'green'),
    (6, 'f',  3.0, 'mauve')
) AS t(id, name, amount, color)
"""

PLANTED_RULES = [  # (rule, expected success, expected unexpected_count)
    (Rule("name is not null", "expect_column_values_to_not_be_null", {"column": "name"}), False, 2),
    (Rule("id is not null", "expect_column_values_to_not_be_null", {"column": "id"}), True, 0),
    (
        Rule(
            "amount > 0", "expect_column_values_to_be_between", {"column": "amount", "min_value": 0, "strict_min": True}
        ),
        False,
        2,
    ),
    (Rule("amount >= -1", "expect_column_values_to_be_between", {"column": "amount", "min_value": -1}), True, 0),
    (Rule("id is unique", "expect_column_values_to_be_unique", {"column": "id"}), False, 2),
    (Rule("name is unique", "expect_column_values_to_be_unique", {"column": "name"}), True, 0),
    (
        Rule(
            "color in set",
            "expect_column_values_to_be_in_set",
            {"column": "color", "value_set": ["red", "blue", "green"]},
        ),
        False,
        2,
    ),
    (
        Rule(
            "color in wide set",
            "expect_column_values_to_be_in_set",
            {"column": "color", "value_set": ["red", "blue", "green", "purple", "mauve"]},
        ),
        True,
        0,
    ),
    (Rule("six rows", "expect_table_row_count_to_equal", {"value": 6}), True, None),
    (Rule("seven rows", "expect_table_row_count_to_equal", {"value": 7}), False, None),
    (Rule("amount < 6", "unexpected_rows", query="SELECT * FROM {batch} WHERE amount >= 6", column="amount"), False, 2),
    (
        Rule("amount <= 100", "unexpected_rows", query="SELECT * FROM {batch} WHERE amount > 100", column="amount"),
        True,
        0,
    ),
]


@pytest.fixture(scope="module")
def planted_con(tmp_path_factory):
    con = duckdb.connect(str(tmp_path_factory.mktemp("gx") / "planted.duckdb"))
    con.execute(PLANTED)
    yield con
    con.close()


def test_planted_rows_are_counted_exactly(planted_con):
    rules = [r for r, _, _ in PLANTED_RULES]
    outcomes = gx_duckdb.validate_table(planted_con, "planted", rules, suite_name="planted")
    assert [o.rule for o in outcomes] == [r.rule for r in rules]  # one outcome per rule, in order
    got = {o.rule: (o.success, o.unexpected_count, o.error) for o in outcomes}
    want = {r.rule: (ok, n, None) for r, ok, n in PLANTED_RULES}
    assert got == want
    by_rule = {o.rule: o for o in outcomes}
    assert by_rule["seven rows"].observed == 6
    assert by_rule["six rows"].observed == 6
    # percentages are of the 6 rows; examples are the offending values
    assert by_rule["name is not null"].unexpected_percent == pytest.approx(100 * 2 / 6)
    assert sorted(float(x) for x in by_rule["amount > 0"].examples) == [-1.0, 0.0]
    assert sorted(by_rule["color in set"].examples) == ["mauve", "purple"]
    assert by_rule["id is unique"].examples == [3, 3]
    assert by_rule["amount > 0"].column == "amount" and by_rule["amount < 6"].column == "amount"


def test_a_sql_rule_is_one_query(planted_con, monkeypatch):
    """GX's own UnexpectedRowsExpectation runs a SQL rule twice (its rows, then their count); the pipeline's
    subclass runs it once. A sequence advanced once per row the rule reads counts the reads."""
    rule = Rule("reads", "unexpected_rows", query="SELECT * FROM {batch} WHERE amount >= 6 AND nextval('reads') > 0")

    def reads() -> int:
        planted_con.execute("CREATE OR REPLACE SEQUENCE reads")
        (outcome,) = gx_duckdb.validate_table(planted_con, "planted", [rule], suite_name="one_query")
        assert (outcome.success, outcome.unexpected_count) == (False, 2)
        return planted_con.execute("SELECT currval('reads')").fetchall()[0][0]

    ours = reads()
    gx = gx_duckdb._import_gx()
    monkeypatch.setattr(gx_duckdb, "_counted_rows", gx.expectations.UnexpectedRowsExpectation)
    assert (ours, reads()) == (2, 4)  # GX's class: the 2 rows twice


def test_planted_rows_through_run_contract_name_column_count_and_examples(planted_con, tmp_path):
    """The same table through run_contract: the failure message a user sees carries the numbers."""
    (tmp_path / "planted.yaml").write_text(
        "asset: planted\n"
        "expectations:\n"
        "  - {rule: amount > 0, type: expect_column_values_to_be_between,"
        " kwargs: {column: amount, min_value: 0, strict_min: true}}\n"
        "  - {rule: amount < 6, type: unexpected_rows, column: amount,"
        " query: 'SELECT * FROM {batch} WHERE amount >= 6'}\n"
        "  - {rule: name is present, type: expect_column_values_to_not_be_null, kwargs: {column: name}, severity: warn}\n",
        encoding="utf-8",
    )
    contract = load_contract("planted", directory=tmp_path)
    outcome = run_contract(planted_con, "planted", "planted", {}, contract=contract)
    assert outcome.rows == 6 and outcome.blocking
    msg = outcome.failure_message()
    assert msg.splitlines()[0].startswith("planted: data contract planted.yaml failed on 6 rows")
    assert "[ERROR] amount > 0 (column amount): FAILED: 2 row(s) break it (33.33%)" in msg
    assert "[ERROR] amount < 6 (column amount): FAILED: 2 row(s) break it (33.33%); e.g. " in msg
    assert "customer" not in msg and "amount=10.0" in msg.replace("Decimal('10.0')", "10.0")
    assert "[WARN] name is present (column name): FAILED: 2 row(s) break it (33.33%)" in msg


def test_aggregate_sql_rule_is_not_reported_as_one_row_breaking_it(planted_con, tmp_path):
    (tmp_path / "aggregate.yaml").write_text(
        "asset: aggregate\n"
        "expectations:\n"
        "  - rule: at most 1% of amounts are >= 6 or <= 0\n"
        "    type: unexpected_rows\n"
        "    column: amount\n"
        "    query: SELECT count(*) AS rows_out_of_range FROM {batch} WHERE amount >= 6 OR amount <= 0\n"
        "           HAVING count(*) > 0.01 * (SELECT count(*) FROM {batch})\n",
        encoding="utf-8",
    )
    outcome = run_contract(
        planted_con, "aggregate", "planted", {}, contract=load_contract("aggregate", directory=tmp_path)
    )
    msg = outcome.failure_message()
    assert outcome.blocking and re.search(r"""rows_out_of_range(['"]: |=)4\b""", msg)  # the summary row is shown
    assert "1 row(s) break it" not in msg


# ---------------------------------------------------------------------------------- upstream-bug sentinel

SENTINEL = (
    "GX/duckdb-engine fixed the empty-result bug (GX #11579/#10738): the CursorPerQuery workaround in "
    "seg_pipeline/quality/gx_duckdb.py may be removed"
)


def _validate_with_creator(creator, expectation):
    gx = gx_duckdb._import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with gx_duckdb._LOCK:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ds = ctx.data_sources.add_sql("sentinel", connection_string="duckdb:///:memory:", kwargs={"creator": creator})
        batch = ds.add_table_asset(name="t", table_name="t").add_batch_definition_whole_table("all").get_batch()
        return batch.validate(expectation)


@pytest.fixture(scope="module")
def sentinel_con(tmp_path_factory):
    con = duckdb.connect(str(tmp_path_factory.mktemp("gx") / "sentinel.duckdb"))
    con.execute("CREATE TABLE t AS SELECT range AS id FROM range(10)")
    yield con
    con.close()


def test_GX_duckdb_engine_fixed_the_empty_result_bug__the_CursorPerQuery_workaround_may_be_removed(sentinel_con):
    """Passes while the upstream bug is there. FAILS when GX or duckdb-engine fix it: then drop CursorPerQuery."""
    import duckdb_engine

    gx = gx_duckdb._import_gx()
    res = _validate_with_creator(
        lambda: duckdb_engine.ConnectionWrapper(sentinel_con.cursor()),
        gx.expectations.ExpectTableRowCountToEqual(value=10),
    )
    plain_works = bool(res.success) and (res.result or {}).get("observed_value") == 10
    # Today (GX 1.24.1, duckdb-engine 0.17, DuckDB 2.0) GX's table.row_count metric raises "list index out of
    # range" on the empty result and the expectation fails.
    assert not plain_works, SENTINEL


def test_the_workaround_makes_the_same_expectation_work(sentinel_con):
    """Control for the sentinel: the same expectation through gx_duckdb's engine (CursorPerQuery) succeeds."""
    gx = gx_duckdb._import_gx()
    res = _validate_with_creator(
        gx_duckdb._engine_kwargs(sentinel_con)["creator"], gx.expectations.ExpectTableRowCountToEqual(value=10)
    )
    assert res.success and res.result["observed_value"] == 10


# ------------------------------------------------------------------------------------------ contract files


CONTRACT_FILES = sorted(p.stem for p in settings.CONTRACTS_DIR.glob("*.yaml"))


def test_there_is_one_contract_file_per_asset_with_a_data_contract_check():
    from seg_pipeline.definitions import ALL_ASSETS

    checked = sorted(
        c.asset_key.to_user_string()
        for a in ALL_ASSETS
        for c in a.check_specs
        if c.name == "data_contract" and c.blocking
    )
    assert set(ASSETS) <= set(checked)
    assert CONTRACT_FILES == checked


@pytest.mark.parametrize("asset", CONTRACT_FILES)
def test_every_contract_file_loads_with_valid_severities(asset):
    contract = load_contract(asset)
    assert contract.asset == asset and contract.rules
    assert {r.severity for r in contract.rules} <= {"error", "warn"}
    assert all(r.rule and r.type for r in contract.rules)


@pytest.mark.parametrize("asset", ASSETS)
def test_contract_loads_and_every_rule_builds_into_a_gx_expectation(asset):
    contract = load_contract(asset)
    assert contract.asset == asset
    assert contract.path.name == f"{asset}.yaml"
    assert contract.rules
    gx = gx_duckdb._import_gx()
    for i, rule in enumerate(contract.rules):
        assert rule.severity in {"error", "warn"}, rule
        rendered = rule.render(PARAMS[asset], contract.path.name)
        assert "${" not in repr(rendered.kwargs) + str(rendered.query), f"{asset}: {rule.rule} left a ${{...}} unfilled"
        exp = gx_duckdb.build_expectation(gx, rendered, i)
        assert exp.meta == {"rule": rule.rule, "index": i}
        assert exp.severity == ("critical" if rule.severity == "error" else "warning")
        if rule.type == "unexpected_rows":
            assert rendered.query.lstrip().upper().startswith("SELECT")  # cross-table rules may omit {batch}
        else:
            assert type(exp).__name__ == "".join(p.capitalize() for p in rule.type.split("_"))
    # the description the Dagster check shows lists every rule with its severity
    desc = contract.describe()
    assert all(f"[{r.severity.upper()}] {r.rule}" in desc for r in contract.rules)


def test_a_parameter_the_asset_does_not_supply_is_named(tmp_path):
    contract = load_contract("customer_features")
    with pytest.raises(ContractError, match=r"customer_features\.yaml.*lookback_days.*does not supply"):
        [r.render({}, contract.path.name) for r in contract.rules]


def _write_contract(directory, name, body):
    (directory / f"{name}.yaml").write_text(body, encoding="utf-8")


def test_bad_severity_is_refused_with_the_file_name(tmp_path):
    _write_contract(
        tmp_path,
        "bad_severity",
        "asset: bad_severity\nexpectations:\n"
        "  - {rule: x not null, type: expect_column_values_to_not_be_null, kwargs: {column: x}, severity: fatal}\n",
    )
    with pytest.raises(ContractError) as exc:
        load_contract("bad_severity", directory=tmp_path)
    msg = str(exc.value)
    assert "bad_severity.yaml" in msg and "expectation #1" in msg and "'fatal'" in msg and "['error', 'warn']" in msg


@pytest.mark.parametrize(
    "name, body, words",
    [
        ("no_rules", "asset: no_rules\nexpectations: []\n", "has no expectations"),
        ("no_type", "asset: no_type\nexpectations:\n  - {rule: something}\n", "needs `rule` and `type`"),
        (
            "sql_no_query",
            "asset: sql_no_query\nexpectations:\n  - {rule: r, type: unexpected_rows}\n",
            "needs a `query`",
        ),
        ("not_yaml", "asset: [unclosed\n", "is not valid YAML"),
    ],
)
def test_malformed_contracts_are_refused_with_the_file_name(tmp_path, name, body, words):
    _write_contract(tmp_path, name, body)
    with pytest.raises(ContractError) as exc:
        load_contract(name, directory=tmp_path)
    assert f"{name}.yaml" in str(exc.value) and words in str(exc.value)


def test_missing_contract_is_refused_with_the_path(tmp_path):
    with pytest.raises(
        ContractError, match=r"no data contract for asset nothing_here: .*nothing_here\.yaml is missing"
    ):
        load_contract("nothing_here", directory=tmp_path)


UNKNOWN_TYPE = (
    "asset: unknown_type\nexpectations:\n"
    "  - {rule: x is positive, type: expect_column_values_to_be_positiv, kwargs: {column: x}}\n"
)


def test_unknown_expectation_type_raises_valueerror_when_built():
    gx = gx_duckdb._import_gx()
    rule = Rule("x is positive", "expect_column_values_to_be_positiv", {"column": "x"})
    with pytest.raises(
        ValueError, match=r"unknown Great Expectations expectation type 'expect_column_values_to_be_positiv'"
    ):
        gx_duckdb.build_expectation(gx, rule)


def test_unknown_expectation_type_blocks_the_asset_and_names_the_file(tmp_path, planted_con):
    """At run time a rule GX cannot build counts as failed (it blocks) and the message names the file. (Loading
    refuses such a file already: the contract is built directly here to reach the run-time path.)"""
    from seg_pipeline.quality.contracts import Contract

    rule = Rule("x is positive", "expect_column_values_to_be_positiv", {"column": "x"}, severity="warn")
    contract = Contract("unknown_type", "", (rule,), tmp_path / "unknown_type.yaml")
    outcome = run_contract(planted_con, "unknown_type", "planted", {}, contract=contract)
    assert outcome.blocking
    msg = outcome.failure_message()
    assert "unknown_type.yaml" in msg
    assert (
        "[ERROR] x is positive (column x): could not be evaluated: ValueError: unknown Great Expectations "
        "expectation type 'expect_column_values_to_be_positiv'" in msg
    )


def test_unknown_expectation_type_is_refused_when_the_contract_loads(tmp_path):
    _write_contract(tmp_path, "unknown_type_load", UNKNOWN_TYPE.replace("unknown_type", "unknown_type_load"))
    with pytest.raises((ContractError, ValueError)) as exc:
        load_contract("unknown_type_load", directory=tmp_path)
    assert "unknown_type_load.yaml" in str(exc.value) and "expect_column_values_to_be_positiv" in str(exc.value)
