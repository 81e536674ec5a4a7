-- batch_bounds: the scale of the raw rows being cleaned (one row), computed once per cleaning batch.
-- A quantity or price over 1,000 times the batch's 99th percentile (or over 1e9) cannot be a sale line:
-- sql/sales_rules.sql rejects it as implausible_quantity / implausible_price.
-- Input: raw_batch (the raw_transactions rows being cleaned).
select
    quantile_cont(quantity_value, 0.99) filter (where quantity_value > 0 and isfinite(quantity_value)) as qty_p99,
    quantile_cont(price_value, 0.99) filter (where price_value > 0 and isfinite(price_value)) as price_p99
from raw_batch
