"""segment_migration_history: customers are conserved between quarters; 'new', 'returning' and 'lapsed' on
hand-built purchase histories; the pure `migrate`; a quarter whose previous quarter was never segmented is
refused."""

from __future__ import annotations

import click
import pandas as pd
import pytest

from seg_pipeline.assets.migration import migrate
from seg_pipeline.insights.analysis import LAPSED, NEW, RETURNING, transition_counts
from seg_pipeline.partitions import parse_quarter
from seg_pipeline.sample_data import write_transactions
from tests.conftest import read_table, run


def test_customers_are_conserved_between_quarters(full_run):
    home, quarters = full_run
    hist = read_table(home, "SELECT * FROM segment_migration_history")
    assign = read_table(home, "SELECT quarter, customer_id, segment FROM segment_assignments")
    by_q = {q: g.set_index("customer_id").segment for q, g in assign.groupby("quarter")}
    assert sorted(hist.quarter.unique()) == quarters
    for prev, q in zip(quarters, quarters[1:]):
        h = hist[hist.quarter == q]
        assert (h.previous_quarter == prev).all()
        assert not h.customer_id.duplicated().any(), q
        arrived = h.from_segment.isin([NEW, RETURNING])
        assert (~arrived).sum() == len(by_q[prev]), q
        assert (h.to_segment != LAPSED).sum() == len(by_q[q]), q
        # exactly the union of both quarters' customers
        assert set(h.customer_id) == set(by_q[prev].index) | set(by_q[q].index), q
        assert not (arrived & (h.to_segment == LAPSED)).any(), q
        # from/to are the segments the customer had in each quarter
        stayed = h[~arrived & (h.to_segment != LAPSED)].set_index("customer_id")
        assert (stayed.from_segment == by_q[prev].loc[stayed.index]).all(), q
        assert (stayed.to_segment == by_q[q].loc[stayed.index]).all(), q
        new = h[arrived].customer_id
        assert not set(new) & set(by_q[prev].index), q
        lapsed = h[h.to_segment == LAPSED].customer_id
        assert not set(lapsed) & set(by_q[q].index), q


def test_first_quarter_everyone_is_new(full_run):
    home, quarters = full_run
    first = quarters[0]
    h = read_table(home, "SELECT * FROM segment_migration_history WHERE quarter = ?", [first])
    n = read_table(home, "SELECT count(*) AS n FROM segment_assignments WHERE quarter = ?", [first]).n.iloc[0]
    assert len(h) == n > 0
    assert (h.from_segment == NEW).all()
    assert not (h.to_segment == LAPSED).any()
    assert (h.previous_quarter == parse_quarter(first).previous().key).all()


def test_new_and_returning_follow_the_first_purchase_ever(full_run):
    """'new' = first purchase ever in the quarter; 'returning' = bought before, absent from the previous window."""
    home, quarters = full_run
    h = read_table(
        home,
        "SELECT h.quarter, h.from_segment, f.first_purchase_ever FROM segment_migration_history h "
        "JOIN customer_features f USING (quarter, customer_id) WHERE h.from_segment IN ('new', 'returning')",
    )
    start = pd.to_datetime(h.quarter)
    assert (pd.to_datetime(h.first_purchase_ever[h.from_segment == NEW]) >= start[h.from_segment == NEW]).all()
    assert (
        pd.to_datetime(h.first_purchase_ever[h.from_segment == RETURNING]) < start[h.from_segment == RETURNING]
    ).all()
    assert (h.from_segment == RETURNING).any()  # two years of life cycles include customers who come back


def test_migration_rows_carry_both_model_versions(full_run):
    home, quarters = full_run
    h = read_table(home, "SELECT DISTINCT quarter, from_model_version, to_model_version FROM segment_migration_history")
    a = read_table(home, "SELECT DISTINCT quarter, model_version FROM segment_assignments")
    version = dict(zip(a.quarter, a.model_version))
    assert len(h) == len(quarters)  # one pair of versions per quarter
    for r in h.itertuples():
        prev = parse_quarter(r.quarter).previous().key
        if r.quarter == quarters[0]:  # waits for history: no model, labels by the rules alone
            assert pd.isna(r.to_model_version) and pd.isna(version[r.quarter]) and pd.isna(r.from_model_version)
            continue
        assert r.to_model_version == version[r.quarter]
        if r.quarter == quarters[1]:  # the first fit: the quarter before had no model
            assert pd.isna(r.from_model_version) and pd.isna(version[prev])
        else:
            assert r.from_model_version == version[prev]


def test_migration_sees_movement(full_run):
    """Over two years of generated life cycles some customers arrive, lapse and change segment."""
    home, quarters = full_run
    h = read_table(home, "SELECT * FROM segment_migration_history WHERE quarter <> ?", [quarters[0]])
    assert (h.from_segment == NEW).any()
    assert (h.to_segment == LAPSED).any()
    moved = h[~h.from_segment.isin([NEW, RETURNING]) & (h.to_segment != LAPSED) & (h.from_segment != h.to_segment)]
    assert len(moved) > 0


def test_migrate_on_hand_made_histories():
    """c1 lapses; c2 stays; c3 moves up; c4's first purchase ever is in this quarter (new); c5 bought in 2010
    and comes back after a gap longer than the window (returning, not new)."""
    previous = pd.DataFrame({"customer_id": ["c3", "c1", "c2"], "segment": ["At-Risk", "Dormant", "Growing Repeat"]})
    current = pd.DataFrame(
        {
            "customer_id": ["c4", "c2", "c3", "c5"],
            "segment": ["New Customers", "Growing Repeat", "High-Value Loyal", "One-Time Buyers"],
            "first_purchase_ever": pd.to_datetime(["2011-07-03", "2010-02-01", "2010-05-05", "2010-03-09"]),
        }
    )
    out = migrate(previous, current, "2011-07-01", "2011-04-01", "2011-07-01", "v_old", "v_new")
    expected = pd.DataFrame(
        {
            "quarter": ["2011-07-01"] * 5,
            "previous_quarter": ["2011-04-01"] * 5,
            "customer_id": ["c1", "c2", "c3", "c4", "c5"],
            "from_segment": ["Dormant", "Growing Repeat", "At-Risk", NEW, RETURNING],
            "to_segment": [LAPSED, "Growing Repeat", "High-Value Loyal", "New Customers", "One-Time Buyers"],
            "from_model_version": pd.array(["v_old"] * 5, dtype="string"),
            "to_model_version": pd.array(["v_new"] * 5, dtype="string"),
        }
    )
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)
    counts = transition_counts(out)
    assert counts.loc["Dormant", LAPSED] == 1 and counts.loc[NEW, "New Customers"] == 1
    assert counts.loc[RETURNING, "One-Time Buyers"] == 1
    assert list(counts.index[-2:]) == [RETURNING, NEW] and counts.columns[-1] == LAPSED
    assert counts.to_numpy().sum() == 5


def test_migrate_with_an_empty_previous_quarter():
    previous = pd.DataFrame({"customer_id": pd.Series([], dtype=object), "segment": pd.Series([], dtype=object)})
    current = pd.DataFrame(
        {
            "customer_id": ["b", "a"],
            "segment": ["Dormant", "At-Risk"],
            "first_purchase_ever": pd.to_datetime(["2010-01-05", "2010-02-01"]),
        }
    )
    out = migrate(previous, current, "2010-01-01", "2009-10-01", "2010-01-01", None, "v1")
    assert out.customer_id.tolist() == ["a", "b"]
    assert (out.from_segment == NEW).all()
    assert out.to_segment.tolist() == ["At-Risk", "Dormant"]
    assert out.from_model_version.isna().all() and (out.to_model_version == "v1").all()


def test_quarter_without_previous_quarter_is_refused(tmp_path, dagster_instance):
    """Each quarter keeps the previous quarter's segment model, so a quarter whose previous quarter has sales
    but was never segmented is refused at clustering_model, with a message that says what to run."""
    src = write_transactions(tmp_path / "data.csv", n_customers=200, seed=11)
    target = "2010-07-01"
    previous = parse_quarter(target).previous().key
    home = tmp_path / "home"
    with pytest.raises(click.ClickException) as info:
        run(home, src, quarters=target, instance=dagster_instance)
    msg = info.value.message
    assert "clustering_model" in msg
    assert previous in msg and target in msg
    assert f"Materialise {previous} first" in msg
    # the quarter's features were published; nothing from the model on
    assert read_table(home, "SELECT count(*) AS n FROM scaled_matrix WHERE quarter = ?", [target]).n.iloc[0] > 0
    tables = set(read_table(home, "SELECT table_name FROM information_schema.tables").table_name)
    assert not tables & {"clustering_model", "segment_assignments", "segment_migration_history"}
