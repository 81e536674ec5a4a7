"""segment_migration_history: customers are conserved between quarters; the pure `migrate`; a quarter whose
previous quarter was never segmented is refused."""

from __future__ import annotations

import click
import pandas as pd
import pytest

from seg_pipeline.assets.migration import LAPSED, NEW, migrate, transition_matrix
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
        assert (h.from_segment != NEW).sum() == len(by_q[prev]), q
        assert (h.to_segment != LAPSED).sum() == len(by_q[q]), q
        # exactly the union of both quarters' customers
        assert set(h.customer_id) == set(by_q[prev].index) | set(by_q[q].index), q
        assert not ((h.from_segment == NEW) & (h.to_segment == LAPSED)).any(), q
        # from/to are the segments the customer had in each quarter
        stayed = h[(h.from_segment != NEW) & (h.to_segment != LAPSED)].set_index("customer_id")
        assert (stayed.from_segment == by_q[prev].loc[stayed.index]).all(), q
        assert (stayed.to_segment == by_q[q].loc[stayed.index]).all(), q
        new = h[h.from_segment == NEW].customer_id
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


def test_migration_sees_movement(full_run):
    """Over two years of generated life cycles some customers arrive, lapse and change segment."""
    home, quarters = full_run
    h = read_table(home, "SELECT * FROM segment_migration_history WHERE quarter <> ?", [quarters[0]])
    assert (h.from_segment == NEW).any()
    assert (h.to_segment == LAPSED).any()
    moved = h[(h.from_segment != NEW) & (h.to_segment != LAPSED) & (h.from_segment != h.to_segment)]
    assert len(moved) > 0


def test_migrate_on_hand_made_frames():
    previous = pd.DataFrame({"customer_id": ["c3", "c1", "c2"], "segment": ["At-Risk", "Dormant", "Growing Repeat"],
                             "cluster": [0, 1, 2]})
    current = pd.DataFrame({"customer_id": ["c4", "c2", "c3"], "segment": ["New Customers", "Growing Repeat",
                                                                           "High-Value Loyal"]})
    out = migrate(previous, current, "2011-07-01", "2011-04-01")
    expected = pd.DataFrame(
        {
            "quarter": ["2011-07-01"] * 4,
            "previous_quarter": ["2011-04-01"] * 4,
            "customer_id": ["c1", "c2", "c3", "c4"],
            "from_segment": ["Dormant", "Growing Repeat", "At-Risk", NEW],
            "to_segment": [LAPSED, "Growing Repeat", "High-Value Loyal", "New Customers"],
        }
    )
    pd.testing.assert_frame_equal(out, expected)
    counts, shares = transition_matrix(out)
    assert counts.loc["Dormant", LAPSED] == 1 and counts.loc[NEW, "New Customers"] == 1
    assert (shares.sum(axis=1).round(12) == 1).all()


def test_migrate_with_an_empty_previous_quarter():
    previous = pd.DataFrame({"customer_id": pd.Series([], dtype=object), "segment": pd.Series([], dtype=object)})
    current = pd.DataFrame({"customer_id": ["b", "a"], "segment": ["Dormant", "At-Risk"]})
    out = migrate(previous, current, "2010-01-01", "2009-10-01")
    assert out.customer_id.tolist() == ["a", "b"]
    assert (out.from_segment == NEW).all()
    assert out.to_segment.tolist() == ["At-Risk", "Dormant"]


def test_quarter_without_previous_assignments_is_refused(tmp_path, dagster_instance):
    src = write_transactions(tmp_path / "data.csv", n_customers=200, seed=11)
    target = "2010-07-01"
    previous = parse_quarter(target).previous().key
    home = tmp_path / "home"
    with pytest.raises(click.ClickException) as info:
        run(home, src, quarters=target, instance=dagster_instance)
    msg = info.value.message
    assert "segment_migration_history" in msg
    assert previous in msg and target in msg
    assert "segment_assignments" in msg
    # the quarter's other assets were published; the migration was not
    assert read_table(home, "SELECT count(*) AS n FROM segment_assignments WHERE quarter = ?", [target]).n.iloc[0] > 0
    tables = set(read_table(home, "SELECT table_name FROM information_schema.tables").table_name)
    assert "segment_migration_history" not in tables
