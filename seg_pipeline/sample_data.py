"""Deterministic generator of transaction data shaped like UCI *Online Retail II*.

The pipeline embeds this as its default dataset and uses it for benchmarks (up to 100M rows). The output
mimics the public export (see /work/shared/DATA.md): the same eight columns and types, invoices of 1-40
lines, a skewed catalogue of ~3,700 products, ~90% United Kingdom, concentrated revenue, customer life
cycles (arrival, growth, lapse, return, one-time buyers), and the quirks cleaning rules must handle:
guest invoices without Customer ID, "C" cancellations, "A" bad-debt adjustments, non-product stock codes,
zero prices, damaged-stock notes, empty and literal "nan" descriptions, and exact duplicate rows.

Everything is vectorised numpy; big files are built chunk by chunk, each chunk an independent slice of
customers drawn from ``np.random.default_rng([seed, chunk])``, so memory stays flat at any size.
"""

from __future__ import annotations

import gzip
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
# column names per layout: UCI Online Retail II, and the older UCI Online Retail (same values, other names)
LAYOUTS = {
    "online_retail_ii": COLUMNS,
    "online_retail_v1": [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ],
}

_SCHEMA = pa.schema(
    [
        ("Invoice", pa.string()),
        ("StockCode", pa.string()),
        ("Description", pa.string()),
        ("Quantity", pa.int64()),
        ("InvoiceDate", pa.timestamp("us")),
        ("Price", pa.float64()),
        ("Customer ID", pa.float64()),
        ("Country", pa.string()),
    ]
)
_FIRST_INVOICE, _FIRST_CUSTOMER_ID = 489434, 12346
_ROWS_PER_CUSTOMER, _MIN_CUSTOMERS, _DEFAULT_CUSTOMERS = 60, 500, 5000
_NATURAL_ROWS_PER_CUSTOMER = 85  # rows per customer without `rows` (5,000 customers: ~420k rows)
_XLSX_MAX_ROWS = 1_000_000
_GZIP_LEVEL = 1  # fast: 100M rows stay within minutes (level 6 is ~3x slower for ~20% smaller files)
_GUEST_SHARE = 0.225  # share of product lines on guest invoices (no Customer ID)
_CANCEL_SHARE = 0.018  # share of rows on "C" invoices
_DUP_SHARE = 0.01  # share of rows followed by an exact copy
_OVERHEAD = 1.037  # all rows / product lines (cancellations, duplicates, service lines, notes)
# Calibrated so the latest segmented quarter (2011-Q3, 12 months to 2011-09-30) of the default data is shaped
# like a real Online Retail II export over the same months (Gini 0.71, top 20% of customers 74% of revenue,
# 37% one-order customers, p90 spend 5.3x the median; tests/test_sample_data_shape.py): a wide value spread
# that also drives the order rate, and a small wholesale tail.
_RATE = 2.9  # orders beyond the second per customer over the whole period, median value
_LIFECYCLE_P = (0.18, 0.26, 0.17, 0.13, 0.26)  # one-time, lapsing, growing, returning, steady
_VALUE_SIGMA, _VALUE_EXP_RATE = 1.42, 0.4  # customer value ~ lognormal(0, sigma); order rate ~ value^exp
_WHOLESALE_P = (0.012, 0.08, 0.6)  # share of wholesale customers: United Kingdom, other countries, EIRE
_ONCE, _LAPSE, _GROW, _RETURN = 0, 1, 2, 3
_SHEETS = (("Year 2009-2010", None, "2010-12-10"), ("Year 2010-2011", "2010-12-01", None))

# (country, weight among customers); EIRE is few customers with wholesale volume, as in UCI
_COUNTRIES = (
    ("United Kingdom", 8600),
    ("Germany", 190),
    ("France", 170),
    ("Spain", 75),
    ("Belgium", 52),
    ("Portugal", 45),
    ("Netherlands", 40),
    ("Switzerland", 40),
    ("Sweden", 34),
    ("Italy", 30),
    ("Australia", 27),
    ("Finland", 27),
    ("Austria", 25),
    ("Norway", 22),
    ("Denmark", 21),
    ("Channel Islands", 18),
    ("Cyprus", 18),
    ("Japan", 15),
    ("USA", 13),
    ("Poland", 12),
    ("EIRE", 10),
    ("Greece", 10),
    ("Unspecified", 8),
    ("Israel", 7),
    ("Canada", 7),
    ("Malta", 5),
    ("United Arab Emirates", 5),
    ("Iceland", 3),
    ("Singapore", 3),
    ("Lithuania", 3),
    ("RSA", 3),
    ("Bahrain", 3),
    ("Brazil", 3),
    ("Korea", 3),
    ("Thailand", 3),
    ("Hong Kong", 3),
    ("Lebanon", 2),
    ("Czech Republic", 2),
    ("European Community", 2),
    ("Nigeria", 2),
    ("West Indies", 2),
    ("Saudi Arabia", 2),
    ("Bermuda", 2),
)
_COUNTRY_NAMES = [c for c, _ in _COUNTRIES]
_COUNTRY_P = np.array([w for _, w in _COUNTRIES], float) / sum(w for _, w in _COUNTRIES)
_EIRE = _COUNTRY_NAMES.index("EIRE")

# best sellers at the top of the popularity ranking: (code, description, price, pack size)
_FAMOUS = (
    ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 2.55, 6),
    ("22423", "REGENCY CAKESTAND 3 TIER", 12.75, 1),
    ("85099B", "JUMBO BAG RED RETROSPOT", 1.95, 10),
    ("84879", "ASSORTED COLOUR BIRD ORNAMENT", 1.69, 8),
    ("47566", "PARTY BUNTING", 4.95, 4),
    ("20725", "LUNCH BAG RED RETROSPOT", 1.65, 10),
    ("21212", "PACK OF 72 RETROSPOT CAKE CASES", 0.55, 24),
    ("22197", "POPCORN HOLDER", 0.85, 12),
    ("21232", "STRAWBERRY CERAMIC TRINKET BOX", 1.25, 12),
    ("84077", "WORLD WAR 2 GLIDERS ASSTD DESIGNS", 0.29, 48),
)
# real products whose codes do not follow the five-digit pattern (rarely sold)
_ODD = (
    ("DCGS0058", "MISO PRETTY  GUM"),
    ("DCGS0069", "OOH LA LA DOGS COLLAR"),
    ("DCGS0003", "BOXED GLASS ASHTRAY"),
    ("DCGS0076", "SUNJAR LED NIGHT NIGHT LIGHT"),
    ("SP1002", "KID'S CHALKBOARD/EASEL"),
    ("15056BL", "EDWARDIAN PARASOL BLACK"),
    ("15056N", "EDWARDIAN PARASOL NATURAL"),
    ("79323W", "WHITE CHERRY LIGHTS"),
)
_STYLES = (
    "",
    "",
    "",
    "SET OF 3 ",
    "SET OF 6 ",
    "PACK OF 12 ",
    "SMALL ",
    "LARGE ",
    "JUMBO ",
    "MINI ",
    "ASSORTED ",
    "HANGING ",
    "RETRO ",
    "ANTIQUE ",
    "FRENCH ",
    "SWEETHEART ",
)
_MOTIFS = (
    "RED",
    "PINK",
    "BLUE",
    "GREEN",
    "WHITE",
    "IVORY",
    "BLACK",
    "CREAM",
    "SILVER",
    "GOLD",
    "PAISLEY",
    "RED RETROSPOT",
    "POLKADOT",
    "VINTAGE",
    "REGENCY",
    "SKULLS",
    "DOLLY GIRL",
    "SPACEBOY",
    "WOODLAND",
    "STRAWBERRY",
    "HEART",
    "BIRD",
    "FLORAL",
    "ROSE",
    "CHRISTMAS",
    "ZINC",
    "GLASS",
    "WOODEN",
    "ENAMEL",
    "CERAMIC",
    "LOVE",
    "BAROQUE",
    "ALPHABET",
    "CIRCUS PARADE",
    "GINGHAM",
    "UNION JACK",
)
_ITEMS = (
    "T-LIGHT HOLDER",
    "LUNCH BAG",
    "JUMBO BAG",
    "CAKE STAND",
    "TEA TOWEL",
    "MUG",
    "CUSHION COVER",
    "DOORMAT",
    "BUNTING",
    "PHOTO FRAME",
    "NAPKINS",
    "PAPER CUPS",
    "CANDLE",
    "LANTERN",
    "WALL CLOCK",
    "NOTEBOOK",
    "PENCILS",
    "STICKERS",
    "WRAP",
    "GIFT BAG",
    "PURSE",
    "HOT WATER BOTTLE",
    "CHILDRENS APRON",
    "BAKING SET",
    "TRINKET BOX",
    "HANGING ORNAMENT",
    "DRAWER KNOB",
    "COAT RACK",
    "STORAGE TIN",
    "PLATE",
    "BOWL",
    "BOTTLE",
    "METAL SIGN",
    "KEY RING",
    "HAIR CLIP",
    "BRACELET",
    "LAMP",
    "PARASOL",
    "SPOON",
    "MAGNET",
    "SNOW GLOBE",
    "WREATH",
    "BELL",
    "EGG CUP",
    "CAKE CASES",
    "PARTY BAG",
    "DOILY",
    "BOX OF MATCHES",
)
_NOTES = (
    "damaged",
    "lost",
    "?",
    "check",
    "missing",
    "wet damaged",
    "Damaged",
    "smashed",
    "thrown away",
    "sold as set on dotcom",
    "found",
    "mixed up",
    None,
    None,
    None,
    None,
    "nan",
)

# Non-product lines: (code, description, rows per million, placement, quantity range, price rule).
# placement: foreign/guest/cust = extra line on a foreign-customer/guest/customer invoice; cancel = own "C"
# invoice of a customer; solo = own invoice of a customer; anon/anon_cancel = own invoice without customer.
_SPECIALS = (
    ("POST", "POSTAGE", 1990, "foreign", (1, 3), (18.0, 18.0, 18.0, 15.0, 40.0)),
    ("DOT", "DOTCOM POSTAGE", 1350, "guest", (1, 1), ("logn", 60.0, 0.9)),
    ("M", "Manual", 900, "cust", (1, 6), ("logn", 4.0, 1.4)),
    ("M", "Manual", 420, "cancel", (1, 1), ("logn", 8.0, 1.4)),
    ("m", "Manual", 5, "cust", (1, 1), ("logn", 2.5, 0.5)),
    ("C2", "CARRIAGE", 265, "cust", (1, 1), (50.0,)),
    ("D", "Discount", 166, "cancel", (1, 1), ("logn", 20.0, 1.0)),
    ("S", "SAMPLES", 97, "cancel", (1, 1), ("logn", 30.0, 1.0)),
    ("BANK CHARGES", "Bank Charges", 96, "solo", (1, 1), (15.0,)),
    ("ADJUST", "Adjustment by john on 26/01/2010 16", 60, "solo", (1, 1), ("logn", 30.0, 1.0)),
    ("ADJUST2", "Adjustment by Peter on Jun 25 2010 ", 3, "solo", (1, 1), ("logn", 100.0, 0.5)),
    ("AMAZONFEE", "AMAZON FEE", 40, "anon_cancel", (1, 1), ("logn", 2000.0, 1.0)),
    ("gift_0001_10", "Dotcomgiftshop Gift Voucher £10.00", 8, "guest", (1, 1), (8.51,)),
    ("gift_0001_20", "Dotcomgiftshop Gift Voucher £20.00", 10, "guest", (1, 1), (17.02,)),
    ("gift_0001_30", "Dotcomgiftshop Gift Voucher £30.00", 6, "guest", (1, 1), (25.53,)),
    ("gift_0001_50", "Dotcomgiftshop Gift Voucher £50.00", 4, "guest", (1, 1), (42.55,)),
    ("PADS", "PADS TO MATCH ALL CUSHIONS", 18, "cust", (1, 1), (0.01,)),  # UCI: 0.001; kept at 2 decimals
    ("CRUK", "CRUK Commission", 15, "cancel", (1, 1), ("logn", 300.0, 0.8)),
    ("TEST001", "This is a test product.", 10, "anon", (1, 5), (4.5,)),
    ("TEST002", "This is a test product.", 2, "anon", (1, 1), (1.0,)),
    ("B", "Adjust bad debt", 0, "adjust", (1, 1), ("logn", -20000.0, 0.8)),
)
_NOTE_RATE, _FREE_SHARE = 1800, 0.001  # damaged/lost notes per million rows; zero-price product lines


def _catalogue(seed: int) -> dict:
    """The product catalogue (shared by all chunks of one seed): codes, descriptions, prices, packs, popularity."""
    rng = np.random.default_rng([seed, 7919])
    pool = np.unique(np.r_[np.arange(20600, 23800), np.arange(84000, 86000), np.arange(10002, 90000, 11)])
    weight = np.where(pool < 24000, 3.0, 1.0) * np.where((pool >= 84000) & (pool < 86000), 2.0, 1.0)
    bases = rng.choice(pool, 3150, replace=False, p=weight / weight.sum())
    n_var = np.where(rng.random(bases.size) < 0.1, rng.integers(2, 5, bases.size), 0)
    taken = {c for c, *_ in _FAMOUS}
    codes = [
        c
        for b, k in zip(bases.tolist(), n_var.tolist())
        for c in ([f"{b}{s}" for s in "ABCDE"[:k]] if k else [str(b)])
        if c not in taken
    ]
    n = len(codes)
    desc = [
        f"{_STYLES[a]}{_MOTIFS[b]} {_ITEMS[c]}"
        for a, b, c in zip(
            rng.integers(0, len(_STYLES), n), rng.integers(0, len(_MOTIFS), n), rng.integers(0, len(_ITEMS), n)
        )
    ]
    price = np.clip(rng.lognormal(np.log(2.1), 0.75, n), 0.1, 15.0)
    pricey = rng.random(n) < 0.02
    price[pricey] = np.clip(rng.lognormal(np.log(35.0), 0.7, pricey.sum()), 15.0, 650.0)
    price = np.where(rng.random(n) < 0.6, np.round(price * 20) / 20, np.round(price, 2)).clip(0.1)
    pack = rng.choice([1, 2, 3, 4, 6, 8, 10, 12, 24], n, p=[0.25, 0.1, 0.05, 0.08, 0.17, 0.05, 0.05, 0.2, 0.05])
    pack = np.where(price > 8, 1, pack)
    for i in np.flatnonzero(rng.random(n) < 0.002):  # a few descriptions quote a price in pounds
        desc[i] = f"{desc[i]} £{max(1, round(price[i]))} EACH"
    codes = [c for c, *_ in _FAMOUS] + codes + [c for c, _ in _ODD]
    desc = [d for _, d, *_ in _FAMOUS] + desc + [d for _, d in _ODD]
    price = np.r_[[p for *_, p, _ in _FAMOUS], price, np.round(rng.uniform(1, 10, len(_ODD)), 2)]
    pack = np.r_[[k for *_, k in _FAMOUS], pack, np.ones(len(_ODD), int)]
    rank = np.r_[np.arange(len(_FAMOUS)), len(_FAMOUS) + rng.permutation(n), np.arange(len(_ODD)) + len(codes)]
    pop = (rank + 40.0) ** -0.9
    cum = np.cumsum(pop) / pop.sum()  # sampled through a 2^18-entry inverse-CDF table (fast gather)
    table = np.minimum(np.searchsorted(cum, (np.arange(1 << 18) + 0.5) / (1 << 18)), len(codes) - 1)
    return {"codes": codes, "desc": desc, "price": price, "pack": pack, "table": table}


def _calendar(start: str, end: str) -> dict:
    """Trading-day weights: no Saturdays, quieter Sundays and Fridays, autumn peak, Christmas closure, growth."""
    first, last = np.datetime64(start, "D"), np.datetime64(end, "D")
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    days = np.arange(first, last + 1)
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    dow = (days.astype(np.int64) + 3) % 7  # Monday = 0
    w = (
        np.array([1.0, 1.05, 1.0, 1.1, 0.8, 0.0, 0.55])[dow]
        * np.linspace(1.0, 1.1, days.size)
        * np.array([0.75, 0.8, 0.95, 0.85, 0.9, 0.95, 0.95, 1.0, 1.2, 1.3, 1.6, 1.3])[month]
    )
    w[((month == 11) & (dom >= 23)) | ((month == 0) & (dom <= 3))] = 0.0
    if w.sum() == 0:
        w[:] = 1.0
    idx = np.where(w > 0, np.arange(w.size), w.size)
    burst = np.flatnonzero((month == 10) | ((month == 11) & (dom < 10)))  # November - 9 December
    return {
        "first": first,
        "cum": np.cumsum(w) / w.sum(),
        "n": w.size,
        "burst": burst,
        "next_open": np.minimum.accumulate(idx[::-1])[::-1],
    }


def _shop_minutes(rng, n: int) -> np.ndarray:
    """Minute of the day within shop hours 7:00-19:59, peaking around lunchtime."""
    m = rng.normal(12.6 * 60, 140, n)
    bad = (m < 420) | (m >= 1200)
    m[bad] = rng.uniform(420, 1200, bad.sum())
    return m.astype(np.int64)


def _to_minutes(rng, cal: dict, s: np.ndarray) -> np.ndarray:
    """Map business-time positions s in [0, 1) to minutes since the first day (trading days only)."""
    day = np.minimum(np.searchsorted(cal["cum"], s, side="right"), cal["n"] - 1)
    return day * 1440 + _shop_minutes(rng, s.size)


def _later(rng, cal: dict, minute: np.ndarray) -> np.ndarray:
    """A time after `minute`: the same day (minutes later) or a few trading days later."""
    day = minute // 1440
    lag = rng.exponential(4.0, minute.size).astype(np.int64) * (rng.random(minute.size) > 0.35)
    new_day = cal["next_open"][np.minimum(day + lag, cal["n"] - 1)]
    same = (lag == 0) | (new_day >= cal["n"])
    soon = np.minimum(minute + rng.integers(1, 120, minute.size), day * 1440 + 1199)
    return np.maximum(
        minute, np.where(same, soon, np.minimum(new_day, cal["n"] - 1) * 1440 + _shop_minutes(rng, minute.size))
    )


def _lines(rng, mean: np.ndarray) -> np.ndarray:
    """Lines per order, 1-37 (room for a service line and a duplicate), beta-binomial with the given mean."""
    p = (mean - 1) / 36
    return 1 + rng.binomial(36, rng.beta(2.5 * p, 2.5 * (1 - p)))


def _price(rng, rule: tuple, n: int) -> np.ndarray:
    if rule[0] == "logn":
        return np.round(np.sign(rule[1]) * rng.lognormal(np.log(abs(rule[1])), rule[2], n), 2)
    return rng.choice(np.array(rule, float), n)


def _customers(rng, n: int, cal: dict, rows: int | None) -> dict:
    """Customer attributes and life cycles; s is business time in [0, 1) over the trading calendar.

    Value (lognormal) drives order rate, basket size and quantities; a few are wholesale. Customers
    arrive over the period (20% already known at the start, a wave in November-December), then lapse, grow,
    leave and come back, stay steady, or never return.
    """
    country = rng.choice(len(_COUNTRIES), n, p=_COUNTRY_P)
    value = rng.lognormal(0.0, _VALUE_SIGMA, n)
    wholesale = rng.random(n) < np.where(
        country == 0, _WHOLESALE_P[0], np.where(country == _EIRE, _WHOLESALE_P[2], _WHOLESALE_P[1])
    )
    kind = rng.choice(len(_LIFECYCLE_P), n, p=_LIFECYCLE_P)
    r = rng.random(n)
    s_a = np.where(r < 0.2, 0.0, rng.random(n) * 0.995)
    if cal["burst"].size:
        b_day = rng.choice(cal["burst"], n)
        s_b = cal["cum"][b_day] - rng.random(n) * (cal["cum"][b_day] - np.r_[0.0, cal["cum"]][b_day])
        s_a = np.where(r > 0.88, np.minimum(s_b, 0.995), s_a)
    s_end = np.where(kind == _LAPSE, s_a + (1 - s_a) * rng.uniform(0.05, 0.9, n), 1.0)
    gap = np.where(kind == _RETURN, (s_end - s_a) * rng.uniform(0.3, 0.6, n), 0.0)
    gap_at = s_a + (s_end - s_a - gap) * rng.uniform(0.1, 0.9, n)
    active = s_end - s_a - gap
    s_first = np.where(r < 0.2, s_a + np.minimum(0.1, active) * rng.random(n), s_a)
    repeat = kind != _ONCE
    lam = np.where(repeat, _RATE * value**_VALUE_EXP_RATE * active, 0.0)
    mean_lines = np.clip(rng.lognormal(np.log(19.0), 0.35, n) * value**0.15, 2, 34)
    if rows is not None:  # scale order rates so the chunk lands just above `rows` (trimmed later)
        target = rows * 1.06 / _OVERHEAD * (1 - _GUEST_SHARE)
        lam *= max(0.0, (target - (mean_lines * (1 + repeat)).sum()) / max((mean_lines * lam).sum(), 1e-9))
    return {
        "country": country,
        "value": value,
        "wholesale": wholesale,
        "kind": kind,
        "repeat": repeat,
        "s_a": s_a,
        "s_first": s_first,
        "active": active,
        "gap": gap,
        "gap_at": gap_at,
        "lam": lam,
        "mean_lines": mean_lines,
    }


def _orders(rng, c: dict, cal: dict) -> dict:
    """Orders of the customers (the first at arrival, growers accelerating) plus guest invoices (cust -1)."""
    n_orders = 1 + c["repeat"] + rng.poisson(c["lam"])  # every repeat customer comes back at least once
    cust = np.repeat(np.arange(n_orders.size), n_orders)
    first = np.zeros(cust.size, bool)
    first[np.cumsum(n_orders) - n_orders] = True
    u = rng.random(cust.size)
    s = c["s_a"][cust] + c["active"][cust] * np.where(c["kind"][cust] == _GROW, np.sqrt(u), u)
    s = np.where(first, c["s_first"][cust], s + c["gap"][cust] * (s > c["gap_at"][cust]))
    minute = _to_minutes(rng, cal, np.minimum(s, 0.9999))
    lines = _lines(rng, c["mean_lines"][cust])
    n_guest = int(round(lines.sum() * _GUEST_SHARE / (1 - _GUEST_SHARE) / 22.0))  # dotcom shop, ~all UK
    cust = np.r_[cust, np.full(n_guest, -1)]
    guest_country = np.where(rng.random(cust.size) < 0.97, 0, rng.choice(len(_COUNTRIES), cust.size, p=_COUNTRY_P))
    return {
        "cust": cust,
        "minute": np.r_[minute, _to_minutes(rng, cal, rng.random(n_guest))],
        "lines": np.r_[lines, _lines(rng, np.full(n_guest, 22.0))],
        "country": np.where(cust >= 0, c["country"][np.maximum(cust, 0)], guest_country),
    }


class _Tables:
    """Growing invoice table (time, customer, country, prefix) and row table (lines pointing to invoices)."""

    def __init__(self):
        self.inv = {k: [] for k in ("minute", "cust", "country", "prefix")}
        self.rows = {k: [] for k in ("inv", "pos", "code", "desc", "qty", "price", "regular")}
        self.n_inv = 0

    def add_invoices(self, minute, cust, country, prefix: int = 0) -> np.ndarray:
        for k, v in zip(self.inv, (minute, cust, country, np.full(len(cust), prefix, np.int8))):
            self.inv[k].append(np.asarray(v))
        self.n_inv += len(cust)
        return np.arange(self.n_inv - len(cust), self.n_inv)

    def add_rows(self, inv, pos, code, desc, qty, price, regular: bool = False) -> None:
        for k, v in zip(
            self.rows, (inv, pos, code, desc, np.asarray(qty, np.int64), price, np.full(len(inv), regular))
        ):
            self.rows[k].append(np.asarray(v))

    def arrays(self) -> tuple[dict, dict]:
        return (
            {k: np.concatenate(v) for k, v in self.inv.items()},
            {k: np.concatenate(v) for k, v in self.rows.items()},
        )


def _product_lines(rng, cat: dict, c: dict, o: dict, tab: _Tables) -> dict:
    """Product lines of all orders: popular products and customer favourites, pack-size quantities."""
    r_inv = np.repeat(np.arange(o["cust"].size), o["lines"])
    pos = np.arange(r_inv.size) - np.repeat(np.cumsum(o["lines"]) - o["lines"], o["lines"])
    is_cust = o["cust"][r_inv] >= 0
    rc = np.maximum(o["cust"][r_inv], 0)
    n_prod = len(cat["codes"])

    def pick(size):  # products by popularity, through the inverse-CDF table
        return cat["table"][rng.integers(0, 1 << 18, size)]

    prod = pick(r_inv.size)
    fav = pick((c["value"].size, 12))  # each customer re-buys a few favourites
    use_fav = is_cust & (rng.random(r_inv.size) < 0.35)
    prod[use_fav] = fav[rc[use_fav], rng.integers(0, 12, use_fav.sum())]
    for _ in range(3):  # an order lists a product once: redraw repeats
        key = np.sort((r_inv * n_prod + prod) * r_inv.size + np.arange(r_inv.size))
        rep = key[1:][key[1:] // r_inv.size == key[:-1] // r_inv.size] % r_inv.size
        prod[rep] = pick(rep.size)
    pack = cat["pack"][prod]
    qty = pack * rng.geometric(1 / (1 + 0.5 * c["value"][rc] ** 0.85))
    bulk = is_cust & c["wholesale"][rc]
    units = np.exp(rng.uniform(np.log(50), np.log(500), bulk.sum()))
    qty[bulk] = pack[bulk] * np.maximum(1, np.round(units / pack[bulk]))
    qty[~is_cust] = rng.geometric(0.55, (~is_cust).sum())
    factor = np.where(~is_cust, 1.65, np.where(bulk, 0.85, np.where(qty >= 48, 0.9, 1.0)))  # dotcom dearer
    price = np.round(cat["price"][prod] * factor, 2)
    price[is_cust & (rng.random(r_inv.size) < _FREE_SHARE)] = 0.0
    tab.add_rows(r_inv, pos, prod, prod, qty, price, regular=True)
    return {"inv": r_inv, "pos": pos, "prod": prod, "qty": qty, "price": price}


def _quirks(rng, cal: dict, o: dict, p: dict, tab: _Tables, n_prod: int) -> None:
    """Cancellations, service/fee/adjustment lines and damaged-stock notes, at UCI's rates."""
    cust_orders = np.flatnonzero(o["cust"] >= 0)
    est_rows = p["inv"].size * _OVERHEAD
    # cancellations: a later "C" invoice mirroring the first k lines of a customer's order
    n_c = min(cust_orders.size, int(round(est_rows * _CANCEL_SHARE / 2.9)))
    src = rng.choice(cust_orders, n_c, replace=False)
    k = np.zeros(o["cust"].size, np.int64)
    k[src] = np.where(rng.random(n_c) < 0.05, 40, rng.geometric(0.5, n_c))
    c_inv = np.zeros(o["cust"].size, np.int64)
    c_inv[src] = tab.add_invoices(_later(rng, cal, o["minute"][src]), o["cust"][src], o["country"][src], 1)
    m = p["pos"] < k[p["inv"]]
    q = np.where(rng.random(m.sum()) < 0.2, np.ceil(p["qty"][m] * rng.random(m.sum())), p["qty"][m])
    tab.add_rows(c_inv[p["inv"][m]], p["pos"][m], p["prod"][m], p["prod"][m], -np.maximum(q, 1), p["price"][m])

    foreign = cust_orders[o["country"][cust_orders] != 0]
    guest = np.flatnonzero(o["cust"] < 0)
    hosts = {
        "foreign": foreign if foreign.size else cust_orders,
        "cust": cust_orders,
        "guest": guest if guest.size else cust_orders,
    }
    for j, (_, _, per_m, place, (q_lo, q_hi), rule) in enumerate(_SPECIALS):
        cnt = int(rng.integers(4, 7)) if place == "adjust" else max(1, int(rng.poisson(per_m * est_rows / 1e6)))
        q = rng.integers(q_lo, q_hi + 1, cnt)
        pos = np.zeros(cnt, np.int64)
        if place in hosts:  # an extra line at the end of existing invoices
            pos, idx = pos + 100, rng.choice(hosts[place], cnt, replace=cnt > hosts[place].size)
        elif place in ("cancel", "solo"):  # own invoice of a customer, after one of their orders
            src = rng.choice(cust_orders, cnt)
            idx = tab.add_invoices(
                _later(rng, cal, o["minute"][src]), o["cust"][src], o["country"][src], int(place == "cancel")
            )
            q = -q if place == "cancel" else q
        else:  # own invoice without customer
            prefix = {"anon": 0, "anon_cancel": 1, "adjust": 2}[place]
            idx = tab.add_invoices(_to_minutes(rng, cal, rng.random(cnt)), np.full(cnt, -1), np.zeros(cnt, int), prefix)
            q = -q if prefix == 1 else q
        tab.add_rows(idx, pos, np.full(cnt, n_prod + j), np.full(cnt, n_prod + j), q, _price(rng, rule, cnt))

    # damaged / lost stock notes: own invoice, no customer, price 0, mostly negative quantity
    cnt = max(1, int(rng.poisson(_NOTE_RATE * est_rows / 1e6)))
    idx = tab.add_invoices(_to_minutes(rng, cal, rng.random(cnt)), np.full(cnt, -1), np.zeros(cnt, int))
    q = np.round(rng.lognormal(2.5, 1.2, cnt)).astype(np.int64) + 1
    tab.add_rows(
        idx,
        np.zeros(cnt, np.int64),
        rng.integers(0, n_prod, cnt),
        n_prod + len(_SPECIALS) + rng.integers(0, len(_NOTES), cnt),
        np.where(rng.random(cnt) < 0.85, -q, q),
        np.zeros(cnt),
    )


def _assemble(
    rng, cat: dict, cal: dict, tab: _Tables, n: int, rows: int | None, chunk: int, n_chunks: int, id_offset: int
) -> pa.Table:
    """Number invoices in time order (interleaved across chunks), sort rows, add duplicates, trim to `rows`."""
    inv, r = tab.arrays()
    n_inv, n_rows = tab.n_inv, r["inv"].size
    rank = np.empty(n_inv, np.int64)
    rank[np.lexsort((rng.random(n_inv), inv["minute"]))] = np.arange(n_inv)
    take = np.sort(rank[r["inv"]] * n_rows + np.arange(n_rows)) % n_rows  # within an invoice: creation order
    dup_inv = rng.random(n_inv) < _DUP_SHARE * 20  # one exact copy of one line in 1 invoice of 20
    n_regular = np.maximum(np.bincount(r["inv"], r["regular"], n_inv), 1).astype(np.int64)
    dup_pos = rng.integers(0, 40, n_inv) % n_regular
    ri = r["inv"][take]
    take = np.repeat(take, 1 + (r["regular"][take] & dup_inv[ri] & (r["pos"][take] == dup_pos[ri])))
    if rows is not None and take.size > rows:  # drop whole random invoices (never the "A" adjustments)
        sizes = np.bincount(r["inv"][take], minlength=n_inv)
        perm = rng.permutation(n_inv)
        perm = np.r_[perm[inv["prefix"][perm] == 2], perm[inv["prefix"][perm] != 2]]
        keep = np.zeros(n_inv, bool)
        keep[perm[np.cumsum(sizes[perm]) <= rows]] = True
        take = take[keep[r["inv"][take]]]

    ri = r["inv"][take]
    numbers = (_FIRST_INVOICE + rank * n_chunks + chunk).tolist()
    invoice = pa.array([("", "C", "A")[p] + str(v) for p, v in zip(inv["prefix"].tolist(), numbers)], pa.string())
    ids = (id_offset + rng.permutation(n)).astype(float)
    cust = inv["cust"][ri]
    codes = pa.array(cat["codes"] + [s[0] for s in _SPECIALS], pa.string())
    descs = pa.array(cat["desc"] + [s[1] for s in _SPECIALS] + list(_NOTES), pa.string())
    stamp = (cal["first"].astype("datetime64[m]") + inv["minute"][ri]).astype("datetime64[us]")
    return pa.Table.from_arrays(
        [
            invoice.take(pa.array(ri)),
            codes.take(pa.array(r["code"][take])),
            descs.take(pa.array(r["desc"][take])),
            pa.array(r["qty"][take], pa.int64()),
            pa.array(stamp, pa.timestamp("us")),
            pa.array(r["price"][take], pa.float64()),
            pa.array(ids[np.maximum(cust, 0)], pa.float64(), mask=cust < 0),
            pa.array(_COUNTRY_NAMES, pa.string()).take(pa.array(inv["country"][ri])),
        ],
        schema=_SCHEMA,
    )


def _build(
    n_customers: int,
    seed: int,
    start: str,
    end: str,
    rows: int | None,
    chunk: int = 0,
    n_chunks: int = 1,
    id_offset: int = _FIRST_CUSTOMER_ID,
) -> pa.Table:
    """One independent chunk of transactions as an Arrow table, rows in invoice-number order."""
    if n_customers < 1 or (rows is not None and rows < 1):
        raise ValueError("n_customers and rows must be positive")
    rng, cat, cal = np.random.default_rng([seed, chunk]), _catalogue(seed), _calendar(start, end)
    c = _customers(rng, n_customers, cal, rows)
    o = _orders(rng, c, cal)
    tab = _Tables()
    tab.add_invoices(o["minute"], o["cust"], o["country"])
    p = _product_lines(rng, cat, c, o, tab)
    _quirks(rng, cal, o, p, tab, len(cat["codes"]))
    return _assemble(rng, cat, cal, tab, n_customers, rows, chunk, n_chunks, id_offset)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """The frame as pandas reads the UCI file: object strings, NaN for missing, datetime64[ns]."""
    df = table.to_pandas()
    df["InvoiceDate"] = df["InvoiceDate"].astype("datetime64[ns]")
    df.loc[df["Description"].isna(), "Description"] = np.nan
    return df


def generate_transactions(
    n_customers: int = _DEFAULT_CUSTOMERS,
    seed: int = 42,
    start: str = "2009-12-01",
    end: str = "2011-12-09",
    rows: int | None = None,
) -> pd.DataFrame:
    """Transactions shaped like UCI Online Retail II, as a DataFrame with exactly COLUMNS.

    With `rows`, the output has about `rows` rows (never more) and, unless `n_customers` is passed
    explicitly (other than the default), one customer per ~60 rows (at least 500). Without it, 5,000
    customers give ~420k rows over two years. Same arguments, same frame.
    """
    if rows is not None and n_customers == _DEFAULT_CUSTOMERS:
        n_customers = max(_MIN_CUSTOMERS, rows // _ROWS_PER_CUSTOMER)
    return _to_pandas(_build(n_customers, seed, start, end, rows))


def _chunks(rows: int | None, n_customers: int | None, seed: int, chunk_rows: int):
    """Arrow tables of consecutive independent chunks (customer slices) of one dataset."""
    if rows is None:
        n_customers = n_customers or _DEFAULT_CUSTOMERS
        k = max(1, math.ceil(n_customers * _NATURAL_ROWS_PER_CUSTOMER / chunk_rows))
    else:
        n_customers = n_customers or max(_MIN_CUSTOMERS, rows // _ROWS_PER_CUSTOMER)
        k = max(1, math.ceil(rows / chunk_rows))
    offset = _FIRST_CUSTOMER_ID
    for i in range(k):
        n_i = n_customers // k + (i < n_customers % k)
        rows_i = None if rows is None else rows // k + (i < rows % k)
        yield _build(n_i, seed, "2009-12-01", "2011-12-09", rows_i, chunk=i, n_chunks=k, id_offset=offset)
        offset += n_i


def _csv_ready(table: pa.Table) -> pa.Table:
    """Text columns as pandas writes the UCI frame: IDs 17850.0 (null = empty), prices 2.55 / 15.0, dates
    2009-12-01 07:45:00."""
    ids = pc.binary_join_element_wise(pc.cast(pc.cast(table["Customer ID"], pa.int64()), pa.string()), ".0", "")
    price = pc.cast(table["Price"], pa.string())
    price = pc.if_else(pc.match_substring(price, "."), price, pc.binary_join_element_wise(price, ".0", ""))
    date = pc.cast(pc.cast(table["InvoiceDate"], pa.timestamp("s")), pa.string())
    return table.set_column(4, "InvoiceDate", date).set_column(5, "Price", price).set_column(6, "Customer ID", ids)


def _pipelined(chunks, write) -> None:
    """Call write(table) for each chunk on a worker thread, so writing overlaps generating the next chunk."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for table in chunks:
            if pending is not None:
                pending.result()
            pending = pool.submit(write, table)
        if pending is not None:
            pending.result()


def _write_csv(path: Path, chunks, gz: bool, names: list[str]) -> None:
    """Append the chunks as CSV (gzip-compressed if `gz`) under one header of `names`.

    Values are never quoted: no generated text holds a comma, quote or line break (Arrow raises if one does).
    """
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with gzip.open(path, "wb", compresslevel=_GZIP_LEVEL) if gz else open(path, "wb") as sink:
        sink.write((",".join(names) + "\n").encode())
        _pipelined((_csv_ready(t) for t in chunks), lambda table: pacsv.write_csv(table, sink, options))


def _write_xlsx(path: Path, df: pd.DataFrame, names: list[str]) -> None:
    """Two sheets like the UCI workbook, columns named `names`; 1-9 December 2010 appears in both."""
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, lo, hi in _SHEETS:
            sel = pd.Series(True, index=df.index)
            if lo:
                sel &= df["InvoiceDate"] >= pd.Timestamp(lo)
            if hi:
                sel &= df["InvoiceDate"] < pd.Timestamp(hi)
            df[sel].set_axis(names, axis=1).to_excel(writer, sheet_name=name, index=False)


def write_transactions(
    path: str | Path,
    rows: int | None = None,
    n_customers: int | None = None,
    seed: int = 42,
    chunk_rows: int = 2_000_000,
    layout: str = "online_retail_ii",
) -> Path:
    """Write generated transactions to `path` (.csv, .csv.gz, .parquet or .xlsx), atomically; return the path.

    CSV and Parquet are streamed chunk by chunk (`chunk_rows` rows each), so memory stays flat at any size.
    The .xlsx workbook has the two UCI sheets and is limited to 1,000,000 rows. `layout` names the columns
    (LAYOUTS): "online_retail_ii" (Invoice, Price, Customer ID) or the older "online_retail_v1" (InvoiceNo,
    UnitPrice, CustomerID); the values are the same.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (use {' or '.join(LAYOUTS)})")
    names = LAYOUTS[layout]
    path = Path(path)
    name = path.name.lower()
    fmt = next((f for f in ("csv.gz", "csv", "parquet", "xlsx") if name.endswith("." + f)), None)
    if fmt is None:
        raise ValueError(f"unsupported file type for {path} (use .csv, .csv.gz, .parquet or .xlsx)")
    if fmt == "xlsx" and (rows or (n_customers or _DEFAULT_CUSTOMERS) * _NATURAL_ROWS_PER_CUSTOMER) > _XLSX_MAX_ROWS:
        raise ValueError(f"xlsx output is limited to {_XLSX_MAX_ROWS:,} rows; use .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    chunks = _chunks(rows, n_customers, seed, chunk_rows if fmt != "xlsx" else _XLSX_MAX_ROWS)
    try:
        if fmt == "xlsx":
            _write_xlsx(tmp, _to_pandas(pa.concat_tables(chunks)), names)
        elif fmt == "parquet":
            schema = pa.schema([f.with_name(n) for f, n in zip(_SCHEMA, names)])
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                _pipelined(
                    (t.rename_columns(names) for t in chunks),
                    lambda table: writer.write_table(table, row_group_size=1_000_000),
                )
        else:
            _write_csv(tmp, chunks, gz=fmt == "csv.gz", names=names)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
