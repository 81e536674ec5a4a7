-- batch_bounds: the scale of the sales (one row), the same population for every cleaning: ALL rows of
-- raw_transactions (every loaded file), not only the rows being cleaned now, so an incremental run judges
-- a new file against the same bounds a full reload of the same files does.
-- A quantity or price over 1,000 times the 99th percentile of the positive finite values (or over 1e9)
-- cannot be a sale line: sql/sales_rules.sql rejects it as implausible_quantity / implausible_price.
-- The percentile is taken over every k-th row of each file (by row number; k = raw rows / 100,000, so every
-- row up to 200,000 raw rows): exact enough for a 1,000x margin, the same on every run over the same files,
-- and constant in memory (an exact quantile holds every value: 1.6 GB at 100M rows, more than DuckDB's cap).
-- When a new file moves a limit, cleaning checks whether any row cleaned before lies between the old and the
-- new limit; if one does, everything is cleaned again (seg_pipeline/assets/cleaning.py).
-- Input: raw_transactions.
with stride as (
    select greatest(1, count(*) // 100000) as k from raw_transactions
),

sampled as (
    select r.quantity_value, r.price_value
    from raw_transactions as r, stride as s
    where r._row_number % s.k = 0
),

percentiles as (
    select
        quantile_cont(quantity_value, 0.99) filter (
            where quantity_value > 0 and isfinite(quantity_value)
        ) as qty_p99,
        quantile_cont(price_value, 0.99) filter (where price_value > 0 and isfinite(price_value)) as price_p99
    from sampled
)

select
    qty_p99,
    price_p99,
    least(1000 * qty_p99, 1e9) as qty_limit,  -- least() skips a NULL: 1e9 when there is no positive value
    least(1000 * price_p99, 1e9) as price_limit
from percentiles
