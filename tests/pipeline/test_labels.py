"""Every label true of its customer: the per-customer naming rules (seg_pipeline/ml/naming.py, label_customers)
on hand-built customers, and the catalogue's validation. Pure functions only: no pipeline run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from seg_pipeline.ml.naming import (
    BASIS_CATALOGUE,
    BASIS_CLUSTER,
    BASIS_DESCRIPTIVE,
    BASIS_NEAREST,
    BASIS_RULES,
    CATALOGUE_PATH,
    CatalogueError,
    customer_figures,
    descriptive_names,
    hold_shares,
    keep_share,
    label_customers,
    load_catalogue,
)

# the typical customer: the median of every frame below (the block outnumbers the probes), so a probe's
# <feature>_ratio is its figure over these values
TYPICAL = {
    "recency_days": 60.0,
    "frequency": 2.0,
    "monetary": 1000.0,
    "avg_order_value": 500.0,
    "distinct_products": 20.0,
    "purchase_span_days": 100.0,
    "tenure_days": 400.0,
}
RATIO_OF = {"monetary_ratio": "monetary", "avg_order_value_ratio": "avg_order_value"}
RATIO_OF |= {"distinct_products_ratio": "distinct_products", "frequency_ratio": "frequency"}


def frame(probes: list[dict], typical: int | None = None) -> pd.DataFrame:  # noqa: D103
    """Probe customers (figures given; ratios as <feature>_ratio keys, turned into the plain figure) followed
    by a block of typical customers that fixes the quarter's median customer."""
    rows = []
    for p in probes:
        row = dict(TYPICAL)
        for k, v in p.items():
            if k in RATIO_OF:
                row[RATIO_OF[k]] = v * TYPICAL[RATIO_OF[k]]
            else:
                row[k] = v
        rows.append(row)
    rows += [dict(TYPICAL)] * (typical if typical is not None else 2 * len(probes) + 1)
    return pd.DataFrame(rows)


def write_catalogue(tmp_path, segments: list[dict], tolerance: float = 0.25):
    path = tmp_path / "segments.yaml"
    path.write_text(yaml.safe_dump({"keep_tolerance": tolerance, "segments": segments}))
    load_catalogue.cache_clear()
    try:
        return load_catalogue(path)
    finally:
        load_catalogue.cache_clear()


def seg(name, conditions, **extra):
    return {"name": name, "description": f"{name}.", "action": "act", "conditions": conditions, **extra}


# ---------------------------------------------------------------------------------------- an oracle


def oracle(fig: pd.Series, raw: dict) -> str:
    """The label the catalogue's rules give a customer without a model, written out from segments.yaml: the
    first name in file order whose conditions hold exactly; a name claiming recency (recency_days max) is
    skipped when a `precedence: lapsing` name holds; else the words of the customer's own figures."""

    def holds(s):
        for f, b in (s.get("conditions") or {}).items():
            v = fig[f]
            if pd.isna(v) or ("min" in b and v < b["min"]) or ("max" in b and v > b["max"]):
                return False
        return True

    segs = raw["segments"]
    lapsing = any(s.get("precedence") == "lapsing" and holds(s) for s in segs)
    for s in segs:
        claims = "max" in (s.get("conditions") or {}).get("recency_days", {})
        if holds(s) and not (lapsing and claims and s.get("precedence") != "lapsing"):
            return s["name"]
    r, f, m = fig["recency_days"], fig["frequency"], fig["monetary_ratio"]
    return " ".join(
        [
            "Active" if r <= 90 else "Cooling" if r <= 180 else "Lapsing",
            "one-time" if f <= 1 else "repeat" if f <= 3 else "frequent",
            "low-spend" if m <= 0.5 else "mid-spend" if m <= 2 else "high-spend",
        ]
    )


def boundary_probes(raw: dict) -> list[dict]:
    """For every condition of every name: a customer who meets all the name's conditions with this one at its
    bound (holds), and one just beyond it (fails)."""
    probes = []
    for s in raw["segments"]:
        s = {**s, "conditions": s.get("conditions") or {}}
        conds = s.get("conditions") or {}
        base = {}
        for f, b in conds.items():  # a value meeting every condition of the name
            base[f] = b["min"] if "min" in b else b["max"]
        for f, b in conds.items():
            for bound, step in (("min", -1), ("max", 1)):
                if bound in b:
                    eps = 1 if f in ("recency_days", "frequency", "tenure_days") else 0.01
                    probes.append({**base, f: b[bound], "_name": s["name"], "_holds": True})
                    probes.append({**base, f: b[bound] + step * eps, "_name": s["name"], "_holds": False})
    return probes


def test_customers_on_both_sides_of_every_condition_get_the_labels_the_rules_give():
    raw = yaml.safe_load(CATALOGUE_PATH.read_text())
    probes = boundary_probes(raw)
    f = frame([{k: v for k, v in p.items() if not k.startswith("_")} for p in probes])
    fig = customer_figures(f)
    cat = load_catalogue()
    got = label_customers(fig, cat)
    expected = [oracle(fig.iloc[i], raw) for i in range(len(f))]
    assert list(got.label) == expected
    # the probes sit on both sides of every condition: at the bound the name holds, just beyond it does not
    by_name = cat.by_name()
    for i, p in enumerate(probes):
        assert bool(by_name[p["_name"]].holds(fig.iloc[[i]])[0]) is p["_holds"], p
    assert len(probes) == 2 * sum(len(b) for s in raw["segments"] for b in (s.get("conditions") or {}).values())
    assert all(b.startswith(BASIS_RULES + ": ") or b.startswith(BASIS_DESCRIPTIVE + ": ") for b in got.basis)


def test_ratios_are_taken_against_the_quarters_median_customer():
    fig = customer_figures(frame([{"monetary": 3000.0}, {"monetary": 250.0}]))
    assert fig["monetary_ratio"].iloc[:2].tolist() == [3.0, 0.25]
    assert fig["frequency_ratio"].iloc[0] == 1.0


# ---------------------------------------------------------------------------------- the model's steps

HVL, STEADY, ONE_TIME = 0, 1, 2
NAMES = {HVL: "High-Value Loyal", STEADY: "Steady Mid-Value", ONE_TIME: "One-Time Buyers"}


def labelled(probes, clusters, nearest=None):
    f = frame(probes)
    n = len(f)
    cl = np.array(list(clusters) + [STEADY] * (n - len(clusters)))
    if nearest is not None:
        nearest = np.array(list(nearest) + [[STEADY, HVL, ONE_TIME]] * (n - len(clusters)))
    out = label_customers(customer_figures(f), load_catalogue(), clusters=cl, cluster_names=NAMES, nearest=nearest)
    return list(out.label[: len(probes)]), list(out.basis[: len(probes)])


def test_a_high_value_customer_silent_for_200_days_is_not_loyal():
    labels, basis = labelled([{"recency_days": 200, "frequency": 6, "monetary_ratio": 4.0}], [HVL])
    assert labels == ["At-Risk"]
    assert basis[0] == f"{BASIS_CATALOGUE}: recency_days >= 120, frequency >= 2, monetary_ratio >= 1"


def test_the_cluster_name_is_kept_within_keep_tolerance_and_lost_beyond_it():
    probes = [
        {"recency_days": 110, "frequency": 3, "monetary_ratio": 2.0},  # 110 <= 90 x 1.25: kept
        {"recency_days": 113, "frequency": 3, "monetary_ratio": 2.0},  # beyond 112.5: lost
        {"recency_days": 30, "frequency": 3, "monetary_ratio": 1.2},  # 1.2 >= 1.5 x 0.75: kept
    ]
    labels, basis = labelled(probes, [HVL, HVL, HVL])
    assert labels == ["High-Value Loyal", "Steady Mid-Value", "High-Value Loyal"]
    assert basis[0] == (
        f"{BASIS_CLUSTER}: frequency >= 1.5, recency_days <= 112.5, monetary_ratio >= 1.125 (keep_tolerance 0.25)"
    )
    assert basis[1].startswith(f"{BASIS_CATALOGUE}: ")


def test_lapsing_beats_the_tolerance_of_an_active_name():
    # Steady Mid-Value holds within tolerance (130 <= 187.5) but At-Risk holds exactly: the customer is At-Risk
    probes = [
        {"recency_days": 130, "frequency": 3, "monetary_ratio": 1.2},
        {"recency_days": 130, "frequency": 3, "monetary_ratio": 0.8},  # At-Risk fails (ratio < 1): stays Steady
        {"recency_days": 160, "frequency": 3, "monetary_ratio": 0.8},  # Dormant holds exactly: lapsing
    ]
    labels, _ = labelled(probes, [STEADY, STEADY, STEADY])
    assert labels == ["At-Risk", "Steady Mid-Value", "Dormant"]


def test_the_nearest_clusters_name_comes_before_catalogue_order():
    # a one-time, ordinary customer in the HVL cluster: neither HVL nor Steady holds; nearest after HVL is
    # One-Time Buyers (which holds), although Low-Value... and New Customers come earlier/later in the file
    probe = {"recency_days": 100, "frequency": 1, "monetary_ratio": 0.8, "tenure_days": 100}
    labels, basis = labelled([probe], [HVL], nearest=[[HVL, ONE_TIME, STEADY]])
    assert labels == ["One-Time Buyers"]
    assert basis[0] == f"{BASIS_NEAREST}: frequency <= 1, monetary_ratio >= 0.5"
    # without the model's order, catalogue order: New Customers (tenure 100 <= 180, recency 100 <= 120) is first
    labels, basis = labelled([probe], [HVL])
    assert labels == ["New Customers"] and basis[0].startswith(BASIS_CATALOGUE)


def test_scoring_is_a_pure_function_of_its_inputs():
    raw = yaml.safe_load(CATALOGUE_PATH.read_text())
    f = frame(boundary_probes(raw))
    fig = customer_figures(f)
    cl = np.arange(len(f)) % 3
    a = label_customers(fig, load_catalogue(), clusters=cl, cluster_names=NAMES)
    b = label_customers(fig.copy(), load_catalogue(), clusters=cl.copy(), cluster_names=dict(NAMES))
    assert list(a.label) == list(b.label) and list(a.basis) == list(b.basis)


# ------------------------------------------------------------------------------------- the edge cases


def test_max_share_caps_a_name_and_the_rest_take_their_next_name(tmp_path):
    cat = write_catalogue(
        tmp_path,
        [
            seg("Big", {"monetary_ratio": {"min": 1.5}}, max_share=0.25, profile={"monetary": 1.0}),
            seg("Any", {"frequency": {"min": 1}}),
        ],
    )
    # 8 customers; 4 meet Big; the cap is floor(0.25 x 8) = 2: the two largest spenders keep it
    money = [5000.0, 4000.0, 3000.0, 2000.0, 100.0, 100.0, 100.0, 100.0]
    f = pd.DataFrame([{**TYPICAL, "monetary": m} for m in money])
    f.loc[4:, "monetary"] = [900.0, 1000.0, 1000.0, 1100.0]  # median 1,050: Big = monetary >= 1,575
    out = label_customers(customer_figures(f), cat)
    assert list(out.label) == ["Big", "Big", "Any", "Any", "Any", "Any", "Any", "Any"]
    assert out.basis[2].endswith("; not Big: its max_share 0.25 is full")


def test_overlapping_names_follow_catalogue_order(tmp_path):
    a = seg("Spender", {"monetary_ratio": {"min": 1.5}})
    b = seg("Regular", {"frequency": {"min": 2}})
    f = frame([{"monetary_ratio": 2.0, "frequency": 3}])
    assert label_customers(customer_figures(f), write_catalogue(tmp_path, [a, b])).label[0] == "Spender"
    assert label_customers(customer_figures(f), write_catalogue(tmp_path, [b, a])).label[0] == "Regular"


def test_a_quarter_where_no_name_holds_gets_descriptive_labels_only(tmp_path):
    cat = write_catalogue(tmp_path, [seg("Whales", {"monetary_ratio": {"min": 100}})])
    f = frame([{"recency_days": 200, "frequency": 1, "monetary_ratio": 0.2}, {"recency_days": 100}])
    out = label_customers(customer_figures(f), cat)
    assert list(out.label[:3]) == ["Lapsing one-time low-spend", "Cooling repeat mid-spend", "Active repeat mid-spend"]
    assert out.basis[0] == f"{BASIS_DESCRIPTIVE}: recency_days > 180, frequency <= 1, monetary_ratio <= 0.5"
    assert set(out.label) <= set(descriptive_names())


def test_a_name_on_a_figure_the_source_cannot_compute_is_never_given(tmp_path):
    cat = write_catalogue(
        tmp_path,
        [seg("Browsers", {"distinct_products_ratio": {"min": 0}}), seg("Anyone", {"frequency": {"min": 0}})],
    )
    f = frame([{}]).assign(distinct_products=np.nan)  # an order-level source: no product codes
    out = label_customers(customer_figures(f), cat)
    assert set(out.label) == {"Anyone"}
    assert out.not_computable == {"Browsers": ["distinct_products_ratio"]}


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        (
            [seg("Loyal", {"loyalty_points": {"min": 1}})],
            "segment 'Loyal': unknown figure 'loyalty_points' in conditions",
        ),
        (
            [seg("Loyal", {"recency_days": {"min": 90, "max": 30}})],
            "segment 'Loyal': condition recency_days: min 90 is above max 30",
        ),
        ([{**seg("Loyal", {}), "colour": "gold"}], "segment 'Loyal' has unknown key(s) ['colour']"),
        ([seg("Loyal", {"frequency": {"at_least": 2}})], "segment 'Loyal': condition frequency must be {min: x}"),
        ([seg("Loyal", {"frequency": {"min": "two"}})], "segment 'Loyal': condition frequency: bounds must be numbers"),
        ([seg("Loyal", {}, precedence="first")], "segment 'Loyal': precedence must be one of ['lapsing']"),
        ([seg("Loyal", {}, max_share=1.5)], "segment 'Loyal': max_share must be a share in (0, 1]"),
        ([seg("A", {}), seg("A", {})], "segment name(s) ['A'] appear more than once"),
    ],
)
def test_an_invalid_catalogue_is_one_error_naming_the_name_and_condition(tmp_path, segments, message):
    with pytest.raises(CatalogueError) as err:
        write_catalogue(tmp_path, segments)
    text = str(err.value)
    assert message in text and str(tmp_path / "segments.yaml") in text
    assert "\n" not in text


def test_the_shipped_catalogue_keeps_its_words_true():
    """A name whose description says "small" is capped at 25% of customers; At-Risk and Dormant are lapsing."""
    cat = load_catalogue()
    for s in cat:
        if "small" in s.description.lower():
            assert s.max_share is not None and s.max_share <= 0.25, s.name
    assert {s.name for s in cat if s.precedence == "lapsing"} == {"At-Risk", "Dormant"}


def test_a_cluster_keeps_its_name_while_it_holds_for_three_eighths_of_its_customers():
    """Hysteresis on the share too: a name is given to a cluster when it holds exactly for half its customers,
    and kept (drift check, refit carry-over) while it holds within keep_tolerance for 0.5 x 0.75 of them."""
    cat = load_catalogue()
    assert keep_share(cat) == 0.375
    # 8 customers of cluster 0: 3 within tolerance of High-Value Loyal (recency <= 112.5), 5 far from it
    recency = [30, 100, 110, 200, 200, 200, 200, 200]
    f = frame([{"recency_days": r, "frequency": 4, "monetary_ratio": 3.0} for r in recency], typical=9)
    shares = hold_shares(customer_figures(f), np.array([0] * 8 + [1] * 9), cat, cat.keep_tolerance)
    assert shares.loc[0, "High-Value Loyal"] == 3 / 8 and shares.loc[1, "High-Value Loyal"] == 0.0
