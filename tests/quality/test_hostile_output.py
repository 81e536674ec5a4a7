"""Nothing a file says may act (issue 22, the outputs): text from a source file is data in every output. It
never becomes Markdown/HTML markup in report.md, a formula in a CSV export, rich markup or a terminal control
in the CLI, or mathtext (or a broken layout) in a plot.

Unit tests of the escaping functions (seg_pipeline/escaping.py) and of the writers that use them, on one
hand-made quarter whose every text comes from a "file" (segment names, descriptions, countries, customer ids);
no pipeline run.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import duckdb
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from seg_pipeline import cli, escaping
from seg_pipeline.assets.common import md_table
from seg_pipeline.assets.insights import (
    CLUSTER_PROFILES_CSV,
    CLUSTER_SUMMARY_CSV,
    STORES_CSV,
    WINBACK_CSV,
    write_report_files,
)
from seg_pipeline.insights import analysis, plots, report
from seg_pipeline.insights.report import REPORT_MD, Plot, ReportData
from seg_pipeline.storage import atomic_write_csv
from tests.conftest import read_table
from tests.insights.test_report_files import PLOTS

# what a source file may hold, and what each output must make of it
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert('x')</script>"
JS_LINK = "[click](javascript:alert(1))"
TABLE_BREAK = "a | b\n| c"
FORMULA = '=HYPERLINK("http://evil.example","x")'
MATH = r"$\bad$ land"  # invalid mathtext: matplotlib failed on it with an empty first line
LONG_COUNTRY = "Republic of " + "Very" * 101  # 416 characters
SEGMENT = "**Big** [spenders](javascript:x) #1"
TERMINAL_LINK = "[link=https://evil.example]Champions[/link]"


# ---------------------------------------------------------------------------------------- 4. Markdown


@pytest.mark.parametrize(
    "value, expected",
    [
        (IMG, r"&lt;img src=x onerror=alert\(1\)&gt;"),
        (SCRIPT, r"&lt;script&gt;alert\(&#x27;x&#x27;\)&lt;/script&gt;"),
        (JS_LINK, r"\[click\]\(javascript:alert\(1\)\)"),
        ("![x](http://e/x.png)", r"\!\[x\]\(http://e/x.png\)"),
        (TABLE_BREAK, r"a \| b \| c"),
        ("`code` *em* _em_ # ~del~ $x$", r"\`code\` \*em\* \_em\_ \# \~del\~ \$x\$"),
        ("a\\[b]", r"a\\\[b\]"),  # a backslash in the data cannot cancel the escape
        ('Tom & "Jerry"\r\nx', "Tom &amp; &quot;Jerry&quot;  x"),
        (12.5, "12.5"),
    ],
)
def test_markdown_escapes_every_kind_of_markup(value, expected):
    assert escaping.markdown(value) == expected


def _hostile_quarter():
    """One quarter whose segment names, descriptions, actions, countries and customer ids are hostile."""
    segs = [SEGMENT, IMG]
    customers = pd.DataFrame(
        {
            "customer_id": [FORMULA, "@SUM(A1)", "+1", "-2", "c5", "c6"],
            "segment": [segs[0], segs[0], segs[0], segs[1], segs[1], segs[1]],
            "cluster": [0, 0, 0, 1, 1, 1],
            "recency_days": [200, 150, 5, 100, 3, 4],
            "frequency": [3, 2, 9, 1, 4, 5],
            "monetary": [900.0, 800.0, 700.0, 50.0, 40.0, 30.0],
            "avg_order_value": [300.0, 400.0, 77.8, 50.0, 10.0, 6.0],
            "distinct_products": [5, 4, 9, 1, 3, 2],
            "tenure_days": [300, 200, 100, 100, 50, 40],
            "first_purchase": pd.to_datetime(["2010-01-05"] * 6),
            "last_purchase": pd.to_datetime(
                ["2011-03-01", "2011-04-01", "2011-09-25", "2011-06-01"] * 1 + ["2011-09-27"] * 2
            ),
            "main_country": [LONG_COUNTRY, MATH, "-Nowhere", "=1+1", "\tTab", "\rCR"],
            "main_store": [None] * 6,
            "p_alive": [np.nan] * 6,
            "expected_purchases_13w": [np.nan] * 6,
            "clv": [np.nan] * 6,
            "value_at_risk": [np.nan] * 6,
            "as_of_date": pd.to_datetime(["2011-09-30"] * 6),
            "label_basis": ["cluster name: frequency >= 1.5"] * 6,
            "monetary_ratio": [1.5, 1.3, 1.2, 0.1, 0.07, 0.05],
            "avg_order_value_ratio": [3.0, 4.0, 0.8, 0.5, 0.1, 0.06],
            "distinct_products_ratio": [1.2, 1.0, 2.2, 0.25, 0.75, 0.5],
            "frequency_ratio": [1.0, 0.7, 3.0, 0.3, 1.3, 1.7],
        }
    )
    g = customers.groupby("segment", sort=False)
    profile = pd.DataFrame(
        {
            "segment": segs,
            "cluster": [0, 1],
            "rank": [2, 1],
            "customers": g.size().to_numpy(),
            "share_customers": [0.5, 0.5],
            "revenue": g["monetary"].sum().to_numpy(),
            "share_revenue": [0.94, 0.06],
        }
    )
    for f in analysis.PROFILE_FEATURES:
        profile[f"mean_{f}"] = g[f].mean().to_numpy()
        profile[f"median_{f}"] = g[f].median().to_numpy()
    profile["mean_p_alive"] = profile["mean_clv"] = profile["total_clv"] = np.nan
    profile["description"] = [SCRIPT + "\n" + TABLE_BREAK, JS_LINK]
    profile["action"] = ["=cmd|' /C calc'!A0", "@SUM(1+1)"]
    profile["conditions_met"] = ["frequency >= 2: 100%", ""]
    sales = customers[["main_country", "customer_id", "monetary"]].rename(
        columns={"main_country": "store", "monetary": "revenue"}
    )
    stores = analysis.store_risk(sales, 0.5, 1, segments=customers)
    wb, threshold = analysis.winback(customers, 90, 100.0)
    wb_t = wb.assign(quarter="2011-07-01")[
        ["quarter", "rank", "customer_id", "segment", "revenue_at_risk", "recency_days", "frequency", "monetary"]
        + ["avg_order_value", "last_purchase", "main_country", "main_store", "p_alive", "clv", "value_at_risk"]
        + ["ranked_by"]
    ]
    history = pd.DataFrame({"from_segment": [segs[1], segs[0], "new"], "to_segment": [segs[0], segs[1], segs[0]]})
    ranks = {segs[0]: 2, segs[1]: 1}
    png = b"\x89PNG\r\n\x1a\n"
    plot_list = [Plot(n, f"title {n}", f"caption {n}", png) for n in PLOTS]
    data = ReportData(
        quarter="2011-07-01",
        quarter_label="2011-Q3",
        as_of_date="2011-09-30",
        previous_label="2011-Q2",
        unit="country",
        lookback_months=12,
        concentration=analysis.concentration(customers["monetary"]),
        headline=analysis.headline_of(profile),
        profile=profile,
        stores=stores,
        store_threshold=0.5,
        min_store_customers=1,
        winback=wb_t.assign(last_purchase=pd.to_datetime(wb_t["last_purchase"]).dt.date),
        winback_threshold=threshold,
        winback_rule="revenue of at least 100",
        winback_min_days=90,
        moves=analysis.count_moves(history, ranks),
        biggest_moves=analysis.biggest_moves(history, ranks),
        first_quarter=False,
        trials=pd.DataFrame(
            {"k": [2, 3], "inertia": [10.0, 8.0], "silhouette": [0.5, 0.4], "in_business_range": [True, True]}
            | {"chosen": [True, False]}
        ),
        k=2,
        k_reason=f"best silhouette for {SEGMENT}",
        value_state="insufficient_data",
        value_note=f"too few customers in {IMG}",
        plots=plot_list,
        files={"this report as Markdown": REPORT_MD, "win-back list": WINBACK_CSV},
    )
    profile_t = profile.assign(quarter="2011-07-01")
    stores_t = stores.assign(quarter="2011-07-01", unit="country")
    return data, customers, wb, profile_t, stores_t


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The quarter's report files, written by the real writer (write_report_files)."""
    data, customers, wb, profile_t, stores_t = _hostile_quarter()
    out = tmp_path_factory.mktemp("report")
    con = duckdb.connect()
    try:
        write_report_files(con, out, data, customers, wb, profile_t, stores_t)
    finally:
        con.close()
    return out


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_report_md_keeps_every_value_as_text(written):
    md = (written / REPORT_MD).read_text(encoding="utf-8")
    # no raw HTML, link, image or emphasis from the data survives anywhere in the file
    for raw in ("<img", "<script", "](javascript", "[click]", "**Big**", "$\\bad"):
        assert raw not in md, raw
    seg = r"\*\*Big\*\* \[spenders\]\(javascript:x\) \#1"
    img = r"&lt;img src=x onerror=alert\(1\)&gt;"
    # the segment table: exact rows, a newline and pipes inside a description stay in their cell
    assert (
        f"| **{seg}** | &lt;script&gt;alert\\(&#x27;x&#x27;\\)&lt;/script&gt; a \\| b \\| c "
        "| frequency &gt;= 2: 100% | =cmd\\|&#x27; /C calc&#x27;\\!A0 |" in md
    )
    assert (
        f"| **{img}** | \\[click\\]\\(javascript:alert\\(1\\)\\) | descriptive: its words are its own figures "
        "| @SUM\\(1+1\\) |" in md
    )
    # the long country and the mathtext country are plain cells
    assert f"| Republic of {'Very' * 101} | 1 |" in md
    assert "| \\$\\\\bad\\$ land | 1 |" in md
    # every table row keeps its column count: no value adds or removes a cell
    widths = {}
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            widths[rows[0]] = {_unescaped_pipes(r) for r in rows}
    assert all(len(w) == 1 for w in widths.values()), widths
    # our own fragments are not escaped: plot links, the files list, the chosen k
    assert "![title segment\\_shares](plots/segment_shares.png)" in md
    assert "- `winback_list.csv`: win\\-back list" not in md and "- `winback_list.csv`: win-back list" in md
    assert "| 2 | 10.0 | 0.500 | yes | **chosen** |" in md


def test_the_markdown_template_cannot_forget_to_escape():
    """Any value interpolated in the Markdown environment is escaped, a new one included; only `| safe`
    (our own fragments) is not."""
    env = report._env()["md"]
    assert env.from_string("{{ x }}|{{ x | upper }}").render(x="<b>") == "&lt;b&gt;|&lt;B&gt;"
    assert env.from_string("{{ '**ours**' | safe }}").render() == "**ours**"


def test_dagster_metadata_tables_escape_names_and_cells():
    df = pd.DataFrame({"segment": [IMG, "a|b"], "n": [-1.5, 2.0], SEGMENT: ["x", None]})
    lines = md_table(df).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "segment",
        "n",
        r"\*\*Big\*\* \[spenders\]\(javascript:x\) \#1",
    ]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [r"&lt;img src=x onerror=alert\(1\)&gt;", "-1.50", "x"]
    assert [c.strip() for c in re.split(r"(?<!\\)\|", lines[3])[1:-1]] == [r"a\|b", "2.00", ""]


def test_contract_results_show_unexpected_values_as_text():
    """The examples of a failed rule (values from the data) in the check's Markdown results table."""
    from seg_pipeline.quality.gate import ContractOutcome
    from seg_pipeline.quality.outcome import RuleOutcome

    rule = RuleOutcome("country_known", "in_set", "country", "warn", False, 1, 50.0, examples=[IMG, "a|b"])
    table = ContractOutcome(contract=None, table="t", rows=2, outcomes=[rule], seconds=0.0).summary_md()
    assert table.splitlines()[-1] == (
        r"| country_known | country | warn | FAIL | 1 | 50.00 | &#x27;&lt;img src=x onerror=alert\(1\)&gt;&#x27;, "
        r"&#x27;a\|b&#x27; |"
    )


# ------------------------------------------------------------------------------------- 5. CSV formulas


def test_one_csv_writer_neutralises_formulas_and_keeps_numbers(tmp_path):
    df = pd.DataFrame(
        {
            "customer_id": ["=1+1", "+1", "-2", "@A1", "\tx", "\rx", "ok", None],
            "segment": pd.Series(["-", "=x", "a=b", "", "b", "c", "d", "e"], dtype="string"),
            "amount": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "n": [-1, 2, 3, 4, 5, 6, 7, 8],
        }
    )
    con = duckdb.connect()
    try:
        atomic_write_csv(con, df, tmp_path / "x.csv")
    finally:
        con.close()
    assert (tmp_path / "x.csv").read_bytes().decode() == (
        "customer_id,segment,amount,n\n"
        "'=1+1,'-,-1.5,-1\n"
        "'+1,'=x,2.0,2\n"
        "'-2,a=b,-3.0,3\n"
        '\'@A1,"",4.0,4\n'
        "'\tx,b,5.0,5\n"
        '"\'\rx",c,6.0,6\n'
        "ok,d,7.0,7\n"
        ",e,8.0,8\n"
    )


def test_every_csv_export_of_a_quarter_is_neutralised(written):
    files = {
        name: (written / name).read_bytes().decode("utf-8")
        for name in (CLUSTER_PROFILES_CSV, CLUSTER_SUMMARY_CSV, WINBACK_CSV, STORES_CSV)
    }
    for name, text in files.items():
        cells = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        for col in cells.columns:
            bad = [v for v in cells[col] if v[:1] in ("=", "+", "@", "\t", "\r") or (v[:1] == "-" and not _number(v))]
            assert not bad, (name, col, bad)
    profiles = pd.read_csv(io.StringIO(files[CLUSTER_PROFILES_CSV]), dtype=str, keep_default_na=False)
    assert profiles.loc[0, "customer_id"] == "'" + FORMULA
    assert profiles.loc[0, "recommended_action"] == "'=cmd|' /C calc'!A0"
    assert set(profiles["main_country"]) >= {"'-Nowhere", "'=1+1", "'\tTab", "'\rCR", MATH}
    summary = pd.read_csv(io.StringIO(files[CLUSTER_SUMMARY_CSV]), dtype=str, keep_default_na=False)
    assert list(summary["action"]) == ["'=cmd|' /C calc'!A0", "'@SUM(1+1)"]
    winback = pd.read_csv(io.StringIO(files[WINBACK_CSV]), dtype=str, keep_default_na=False)
    assert list(winback["customer_id"]) == ["'" + FORMULA, "'@SUM(A1)"]
    stores = pd.read_csv(io.StringIO(files[STORES_CSV]), dtype=str, keep_default_na=False)
    assert "'=1+1" in set(stores["store"])


def _number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------- 6. terminal


def test_terminal_text_escapes_markup_and_shows_controls():
    assert escaping.terminal(TERMINAL_LINK) == r"\[link=https://evil.example]Champions\[/link]"
    assert escaping.terminal("a\x1b[2Jb\rc\n") == r"a\x1b[2Jb\x0dc\x0a"
    assert escaping.terminal("ends with \\") == "ends with \\\\"


@pytest.fixture
def captured(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=400, force_terminal=True, color_system="truecolor"))
    return buf


def test_summary_prints_segment_names_actions_and_headline_as_text(captured, monkeypatch):
    from seg_pipeline.insights import summary as summary_mod

    segs = [TERMINAL_LINK, "Clear\x1b[2J"]
    table = pd.DataFrame(
        {
            "segment": segs,
            "customers": [10, 5],
            "share_customers": [0.6, 0.4],
            "share_revenue": [0.9, 0.1],
            "mean_recency_days": [10.0, 50.0],
            "mean_frequency": [3.0, 1.0],
            "mean_monetary": [900.0, 100.0],
            "action": ["[red]call[/red]", "\x1b]8;;http://evil\x1b\\x"],
        }
    )
    counts = pd.DataFrame([[1, 2], [3, 4]], index=segs, columns=segs)
    monkeypatch.setattr(
        summary_mod,
        "latest_summary",
        lambda db, q=None: ("2011-07-01", table, counts, f"the {TERMINAL_LINK} customers"),
    )
    cli.print_summary(Path("/nowhere"))
    out = captured.getvalue()
    assert "\x1b]8;" not in out  # no terminal hyperlink, neither rich's nor the data's
    assert "\x1b[2J" not in out  # the data's escape sequence is shown, not run
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # rich's own colours only
    # the segment table, the headline, the action list, the migration table's row and column (whose header
    # puts a word per line, breaking after '/')
    assert plain.count("[link=https://evil.example]Champions[/link]") == 4
    assert plain.count("evil.example]Champions[/") == 5 and "[link=https:/" in plain
    assert "Clear\\x1b[2J" in plain and "[red]call[/red]" in plain and "\\x1b]8;;http://evil\\x1b\\x" in plain


def test_run_prints_a_home_with_brackets_as_it_is(tmp_path, monkeypatch):
    from click.testing import CliRunner

    home = tmp_path / "[bold]home[/bold] [link=https://evil.example]x"
    monkeypatch.setattr(cli, "run_pipeline", lambda *a, **k: ["2011-07-01"])
    monkeypatch.setattr(cli, "print_summary", lambda *a, **k: None)
    monkeypatch.setattr(cli, "_rejected_line", lambda home: None)
    result = CliRunner().invoke(cli.main, ["run", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"Report: {home.resolve() / 'reports' / '2011-07-01' / 'report.html'}"


def test_an_error_message_shows_control_characters(tmp_path, monkeypatch):
    import click
    from click.testing import CliRunner

    def boom(*a, **k):
        raise click.ClickException("source /data/\x1b[2Jevil\r.csv cannot be read")

    monkeypatch.setattr(cli, "run_pipeline", boom)
    result = CliRunner().invoke(cli.main, ["run", "--home", str(tmp_path / "h")])
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: source /data/\\x1b[2Jevil\\x0d.csv cannot be read"


# ---------------------------------------------------------------------------------------- 10. plots


@pytest.mark.parametrize(
    "value, expected",
    [
        (LONG_COUNTRY, "Republic of " + "Very" * 6 + "Ver\u2026"),
        (MATH, r"\$\bad\$ land"),
        ("a\nb\x1bc", "a b c"),
        ("$5 off", r"\$5 off"),
    ],
)
def test_plot_label_is_short_one_line_and_never_mathtext(value, expected):
    got = escaping.plot_label(value)
    assert got == expected and len(got.replace("\\$", "$")) <= escaping.PLOT_LABEL_CHARS
    assert not matplotlib.text.Text(text=got)._preprocess_math(got)[1]  # not parsed as mathtext


def test_every_plot_draws_hostile_names_as_plain_short_labels(monkeypatch):
    data, customers, *_ = _hostile_quarter()
    figures = []
    real_png = plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or real_png(fig))
    order = list(data.profile["segment"])
    sales = customers[["main_country", "customer_id", "monetary"]].rename(
        columns={"main_country": "store", "monetary": "revenue"}
    )
    counts = pd.DataFrame([[3, 1], [2, 5]], index=[order[0], MATH], columns=[order[0], LONG_COUNTRY])
    pngs = [
        plots.share_bars(data.profile),
        plots.recency_by_segment(customers.assign(segment=customers["main_country"]), list(customers["main_country"])),
        plots.p_alive_by_segment(customers, order, unavailable=f"{MATH} {LONG_COUNTRY}"),
        plots.store_segment_heatmap(analysis.store_segment_revenue(sales, customers), "country"),
        plots.migration_heatmap(counts),
        plots.migration_flow(counts),
    ]
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    texts = [t.get_text() for f in figures for t in f.findobj(matplotlib.text.Text) if t.get_text()]
    assert "Republic of " + "Very" * 6 + "Ver\u2026" in texts  # recency tick label
    assert r"\$\bad\$ land" in texts
    assert "Republic of " + "Very" * 6 + "Ver\u2026  (900)" in texts  # heatmap row
    for f in figures:
        for t in f.findobj(matplotlib.text.Text):
            assert not t._preprocess_math(t.get_text())[1], t.get_text()
            if not t.get_text().startswith("No customer-value fit"):  # a note, wrapped: not a label
                assert "VeryVeryVeryVeryVeryVeryVeryVery" not in t.get_text()


# ------------------------------------------------------- 10. a failed quarter removes nothing published


def _quarterly_tables(home: Path) -> list[str]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = 'main' "
                "AND NOT starts_with(table_name, '_') AND column_name = 'quarter' ORDER BY 1"
            ).fetchall()
        ]
    finally:
        con.close()


def _quarter_state(home: Path, tables: list[str], quarters: list[str]) -> dict:
    """Every quarterly table's rows per quarter, and every file of the quarters' report folders."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = {
            (t, q): con.execute(f'SELECT * FROM "{t}" WHERE quarter = ? ORDER BY ALL', [q]).fetchall()
            for t in tables
            for q in quarters
        }
    finally:
        con.close()
    files = {
        str(f.relative_to(home)): f.read_bytes()
        for q in quarters
        for f in sorted((home / "reports" / q).rglob("*"))
        if f.is_file()
    }
    return {"rows": rows, "files": files}


@pytest.mark.slow  # a copy of the shared run, then a run that fails in its second quarter
def test_a_failed_quarter_on_changed_sales_keeps_every_quarter_published_before(
    full_run, small_csv, dagster_instance, tmp_path, monkeypatch
):
    """The source edited (one more line in the last quarter: changed sales, every quarter to rebuild), then
    segment_insights fails in the second quarter. Every quarter the run did not rebuild keeps its rows in
    every quarterly table and its report folder byte for byte; they are listed as superseded; a re-run
    rebuilds them."""
    import click

    from tests.conftest import run

    home0, quarters = full_run
    home = tmp_path / "home"
    shutil.copytree(home0, home)
    tables = _quarterly_tables(home)
    assert {"segment_assignments", "segment_profile", "customer_features", "clustering_model"} <= set(tables)
    before = _quarter_state(home, tables, quarters[1:])
    edited = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    extra = edited.iloc[[-1]].assign(Invoice="999999")
    pd.concat([edited, extra]).to_csv(tmp_path / "edited.csv", index=False)

    failing = quarters[1]
    monkeypatch.setenv("SEG_PIPELINE_FAILPOINT", f"fail:segment_insights:{failing}")
    with pytest.raises(click.ClickException) as exc:
        run(home, tmp_path / "edited.csv", instance=dagster_instance)
    assert exc.value.message == (
        f"quarter {failing} failed: step segment_insights: failpoint segment_insights:{failing}"
    )

    after = _quarter_state(home, tables, quarters[1:])
    insights_tables = {"segment_profile", "store_concentration", "winback_list"}
    for (t, q), rows in before["rows"].items():
        if q != failing or t in insights_tables:  # the failing quarter's earlier steps were rebuilt
            assert after["rows"][(t, q)] == rows, (t, q)
    assert after["files"] == before["files"]  # reports/<quarter>/ of every quarter not rebuilt, unchanged
    superseded = read_table(home, "SELECT table_name, quarter FROM _superseded_quarters ORDER BY ALL")
    assert set(zip(superseded.table_name, superseded.quarter)) == {(t, q) for t in tables for q in quarters[2:]} | {
        (t, failing) for t in insights_tables
    }

    # `seg-pipeline summary` says the quarter it shows is kept from the replaced sales
    from seg_pipeline.insights.summary import latest_summary

    quarter, _, _, headline = latest_summary(home / "warehouse.duckdb")
    assert quarter == quarters[-1] and headline.endswith(
        f"\nNote: {quarter} was built from sales since replaced (a source file removed or replaced, another source "
        "or mapping) and is kept as published until `seg-pipeline run` rebuilds it."
    )

    # what `--quarters latest` counts as not done, and rebuilds first (a rebuild takes a quarter off the list:
    # tests/quality/test_hostile_input.py::test_a_new_source_replaces_every_output_of_the_old_one runs it)
    from seg_pipeline.storage import superseded_quarters

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        assert superseded_quarters(con) == set(quarters[1:])
    finally:
        con.close()


def test_a_superseded_previous_quarter_reads_as_absent():
    from seg_pipeline.storage import SUPERSEDED_DDL
    from seg_pipeline.tables import chosen_model_row, quarter_assignments

    con = duckdb.connect()
    con.execute("CREATE TABLE clustering_model AS SELECT '2011-04-01' AS quarter, true AS chosen, 4 AS k")
    con.execute(
        "CREATE TABLE segment_assignments AS SELECT '2011-04-01' AS quarter, 'c1' AS customer_id, "
        "'A' AS segment, 'v1' AS model_version"
    )
    assert chosen_model_row(con, "2011-04-01")["k"] == 4 and len(quarter_assignments(con, "2011-04-01")) == 1
    con.execute(SUPERSEDED_DDL)
    con.execute(
        "INSERT INTO _superseded_quarters VALUES ('clustering_model', '2011-04-01', now()), "
        "('segment_assignments', '2011-04-01', now())"
    )
    assert chosen_model_row(con, "2011-04-01") is None and quarter_assignments(con, "2011-04-01").empty
