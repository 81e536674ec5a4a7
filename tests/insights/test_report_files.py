"""The files segment_insights writes per quarter (reports/<quarter>/), checked against the warehouse of the
shared full run (tests/conftest.py: ~400 generated customers, 8 quarters)."""

from __future__ import annotations

import base64
import html as htmllib
import re
from pathlib import Path

import pandas as pd
import pytest

from seg_pipeline.insights import analysis
from seg_pipeline.insights.report import REPORT_HTML, REPORT_MD
from seg_pipeline.ml.naming import load_catalogue
from tests.conftest import read_table

PLOTS = [
    "segment_shares",
    "lorenz",
    "store_segment_revenue",
    "recency_by_segment",
    "migration_flow",
    "migration_matrix",
    "k_selection",
    "p_alive_by_segment",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def folder(home, quarter) -> Path:
    return Path(home) / "reports" / quarter


@pytest.fixture(scope="module")
def latest(full_run):
    home, quarters = full_run
    return home, quarters[-1]


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"customer_id": str})


def test_every_quarter_has_its_files_and_table_partitions(full_run):
    home, quarters = full_run
    for q in quarters:
        for name in [
            REPORT_HTML,
            REPORT_MD,
            "cluster_profiles.csv",
            "cluster_summary.csv",
            "winback_list.csv",
            "store_concentration.csv",
        ] + [f"plots/{p}.png" for p in PLOTS]:
            assert (folder(home, q) / name).is_file(), (q, name)
    for table in ["segment_profile", "store_concentration"]:
        got = read_table(home, f"SELECT DISTINCT quarter FROM {table} ORDER BY 1")["quarter"].tolist()
        assert got == quarters, table
    # no staged candidate left behind by a successful run
    staged = read_table(home, "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '__stage_%'")
    assert staged.empty


def test_cluster_profiles_has_one_row_per_assigned_customer_and_matches_cluster_summary(full_run):
    home, quarters = full_run
    for q in quarters:
        profiles = _csv(folder(home, q) / "cluster_profiles.csv")
        summary = pd.read_csv(folder(home, q) / "cluster_summary.csv")
        assigned = read_table(
            home, "SELECT customer_id, segment, cluster FROM segment_assignments WHERE quarter = ?", [q]
        )
        # one row per assigned customer of the quarter, with its segment and cluster
        assert len(profiles) == len(assigned) and profiles["customer_id"].is_unique, q
        merged = profiles.merge(assigned, on="customer_id", suffixes=("", "_a"), validate="one_to_one")
        assert len(merged) == len(assigned)
        assert (merged["segment"] == merged["segment_a"]).all() and (merged["cluster"] == merged["cluster_a"]).all()
        # ready for a CRM: id first, an action for everyone, key features present
        assert profiles.columns[0] == "customer_id"
        assert {"recency_days", "frequency", "monetary", "avg_order_value", "recommended_action"} <= set(
            profiles.columns
        )
        assert profiles["recommended_action"].notna().all()
        # one row per segment, whose counts are the profile file's counts
        assert summary["segment"].is_unique, q
        assert profiles["segment"].value_counts().to_dict() == dict(zip(summary["segment"], summary["customers"])), q
        rev = profiles.groupby("segment")["monetary"].sum()
        for r in summary.itertuples():
            assert rev[r.segment] == pytest.approx(r.revenue, abs=0.01 * r.customers)  # CSV rounds to cents
        # and the same counts as the segmentation's own summary table
        seg = read_table(home, "SELECT segment, customers FROM segment_summary WHERE quarter = ?", [q])
        assert dict(zip(seg["segment"], seg["customers"])) == dict(zip(summary["segment"], summary["customers"]))


def test_html_report_embeds_every_plot_and_states_the_headline(latest):
    home, q = latest
    text = (folder(home, q) / REPORT_HTML).read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(PLOTS)
    for b64 in images:
        assert base64.b64decode(b64)[:8] == PNG_MAGIC
    for name in PLOTS:
        assert f'id="plot-{name}"' in text
    # a single self-contained file: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:|//|[^"#d][^"]*\.(png|css|js))', text)
    profile = read_table(home, "SELECT * FROM segment_profile WHERE quarter = ?", [q])
    headline = analysis.headline_of(profile)
    assert re.fullmatch(r"\d+\.\d% of customers generate \d+\.\d% of revenue: the [\d,]+ .+ customers\.", headline)
    assert headline in htmllib.unescape(text)


def test_headline_is_the_top_revenue_segment_computed_independently(latest):
    home, q = latest
    df = read_table(
        home,
        "SELECT a.segment, f.monetary FROM segment_assignments a JOIN customer_features f USING (quarter, customer_id) "
        "WHERE quarter = ?",
        [q],
    )
    by_seg = df.groupby("segment")["monetary"].agg(["size", "sum"])
    top = by_seg["sum"].idxmax()
    expected = (
        f"{by_seg.loc[top, 'size'] / len(df):.1%} of customers generate "
        f"{by_seg.loc[top, 'sum'] / df['monetary'].sum():.1%} of revenue"
    )
    text = htmllib.unescape((folder(home, q) / REPORT_HTML).read_text(encoding="utf-8"))
    assert expected in text and top in text


def test_markdown_report_points_at_the_plot_files(latest):
    home, q = latest
    md = (folder(home, q) / REPORT_MD).read_text(encoding="utf-8")
    refs = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", md)
    assert sorted(refs) == sorted(f"plots/{p}.png" for p in PLOTS)
    for ref in refs:
        assert (folder(home, q) / ref).read_bytes()[:8] == PNG_MAGIC
    assert "of customers generate" in md


def test_both_reports_say_why_each_label_with_the_shares_meeting_its_conditions(latest):
    """Per segment, the report shows the share of its customers meeting each condition of its name, as
    segment_profile records it; every catalogue name's conditions appear with a share."""
    from seg_pipeline.escaping import markdown

    home, q = latest
    md = (folder(home, q) / REPORT_MD).read_text(encoding="utf-8")
    html = (folder(home, q) / "report.html").read_text(encoding="utf-8")
    prof = read_table(home, "SELECT segment, conditions_met FROM segment_profile WHERE quarter = ?", [q])
    catalogue = load_catalogue().by_name()
    named = prof[prof.segment.isin(catalogue)]
    assert len(named) >= 3
    for r in named.itertuples():
        seg = catalogue[r.segment]
        assert [part.split(":")[0].split(" ")[0] for part in r.conditions_met.split(", ")] == [
            f for f, b in seg.conditions.items() for _ in b
        ]
        assert re.fullmatch(r"([a-z_]+ [<>]= [0-9.]+: \d+%(, )?)+", r.conditions_met)
        assert f"| **{markdown(r.segment)}** | {markdown(seg.description)} | {markdown(r.conditions_met)} |" in md
        assert f"<td>{r.conditions_met.replace('>', '&gt;').replace('<', '&lt;')}</td>" in html


def test_winback_list_follows_the_default_rule(latest):
    home, q = latest
    features = read_table(
        home, "SELECT customer_id, recency_days, monetary FROM customer_features WHERE quarter = ?", [q]
    )
    value = read_table(home, "SELECT customer_id, value_at_risk FROM customer_value WHERE quarter = ?", [q])
    features = features.merge(value, on="customer_id", how="left")
    threshold = features["monetary"].quantile(0.8)
    expected = features[(features["recency_days"] >= 90) & (features["monetary"] >= threshold)]
    # ranked by value at risk when the quarter has a customer-value fit (the shared run's latest quarter has)
    assert expected["value_at_risk"].notna().all()
    expected = expected.sort_values(["value_at_risk", "monetary", "customer_id"], ascending=[False, False, True])[
        "customer_id"
    ].tolist()
    table = read_table(home, "SELECT * FROM winback_list WHERE quarter = ? ORDER BY rank", [q])
    assert table["customer_id"].tolist() == expected
    assert set(table["ranked_by"]) == {"value_at_risk"}
    assert table["rank"].tolist() == list(range(1, len(expected) + 1))
    csv = _csv(folder(home, q) / "winback_list.csv")
    assert csv["customer_id"].tolist() == expected
    # the cluster profiles carry the win-back rank too
    profiles = _csv(folder(home, q) / "cluster_profiles.csv").dropna(subset=["winback_rank"])
    assert profiles.sort_values("winback_rank")["customer_id"].tolist() == expected


def test_store_concentration_accounts_for_all_revenue(latest):
    home, q = latest
    stores = read_table(home, "SELECT * FROM store_concentration WHERE quarter = ?", [q])
    total = read_table(home, "SELECT sum(monetary) AS t FROM customer_features WHERE quarter = ?", [q])["t"].iloc[0]
    assert stores["revenue"].sum() == pytest.approx(total)
    assert set(stores["unit"]) == {"country"}  # the generated sample has no store column
    assert stores["store"].is_unique
    assert ((stores["top10_revenue_share"] >= 0) & (stores["top10_revenue_share"] <= 1 + 1e-9)).all()


def test_run_command_ends_with_the_report_path(full_run, monkeypatch):
    """`seg-pipeline run` prints where the latest quarter's report is (the pipeline itself is stubbed here:
    the shared run above already materialised everything)."""
    from click.testing import CliRunner

    from seg_pipeline import cli

    home, quarters = full_run
    monkeypatch.setattr(cli, "run_pipeline", lambda *a, **k: quarters)
    result = CliRunner().invoke(cli.main, ["run", "--home", str(home)])
    assert result.exit_code == 0, result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    path = Path(last.removeprefix("Report: "))
    assert last.startswith("Report: ") and path == folder(Path(home).resolve(), quarters[-1]) / REPORT_HTML
    assert path.is_file()


def test_a_partial_first_quarter_is_labelled_as_such(full_run):
    """The data starts 2009-12-01, inside 2009-Q4: that quarter is offered and its report says it is partial;
    later quarters are not labelled so."""
    home, quarters = full_run
    first = (folder(home, quarters[0]) / REPORT_MD).read_text(encoding="utf-8")
    assert "# Customer segments, 2009-Q4 \\(partial quarter: sales from 2009-12-01\\)" in first  # escaped as text
    later = (folder(home, quarters[1]) / REPORT_MD).read_text(encoding="utf-8")
    assert "partial quarter" not in later
