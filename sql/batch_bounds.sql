-- batch_bounds: the scale of the raw rows being cleaned (one row), computed once per cleaning batch.
-- A quantity or price over 1,000 times the batch's 99th percentile (or over 1e9) cannot be a sale line:
-- sql/sales_rules.sql rejects it as implausible_quantity / implausible_price.
-- The percentile is taken over every k-th row of each file (by row number; k = rows / 100,000, so every
-- row of a batch up to 200,000 rows): exact enough for a 1,000x margin, the same on every run, and
-- constant in memory (an exact quantile holds every value: 1.6 GB at 100M rows, more than DuckDB's cap).
-- Input: raw_batch (the raw_transactions rows being cleaned).
with stride as (
    select greatest(1, count(*) // 100000) as k from raw_batch
),

sampled as (
    select r.quantity_value, r.price_value
    from raw_batch as r, stride as s
    where r._row_number % s.k = 0
)

select
    quantile_cont(quantity_value, 0.99) filter (where quantity_value > 0 and isfinite(quantity_value)) as qty_p99,
    quantile_cont(price_value, 0.99) filter (where price_value > 0 and isfinite(price_value)) as price_p99
from sampled
