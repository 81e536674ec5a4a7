-- customer_value_inputs: the buy-till-you-die inputs of every customer who bought on or before the as-of date,
-- from the full purchase history (not only the look-back window).
-- Input: cleaned_sales. Parameters:
--   $quarter      the partition key (quarter start date, text)
--   $as_of_date   the snapshot date (the quarter's last day)
--   $as_of_end    the first instant after the as-of date: only transactions before it count
--   $unit_days    days per time unit (7: weeks); time is measured at day resolution, then divided
-- A purchase occasion is a day with at least one order: same-day orders are collapsed into one.
-- frequency = repeat occasions (occasions after the first day), recency = first to last occasion,
-- T = first occasion to the as-of date, monetary_value = mean value of the repeat occasions (0 without any).
-- Money is summed as DECIMAL (exact, like sql/customer_features.sql).
with history as (
    select customer_id, cast(invoice_date as date) as purchase_day, line_revenue
    from cleaned_sales
    where invoice_date < $as_of_end
),

occasions as (
    select
        customer_id,
        purchase_day,
        sum(cast(line_revenue as decimal(38, 6))) as day_value
    from history
    group by customer_id, purchase_day
),

customers as (
    -- one pass over the occasions: the first day's value is arg_min(day_value, purchase_day), so the repeat
    -- value is the total less that (exact: DECIMAL), with no window over the occasions
    select
        customer_id,
        min(purchase_day) as first_purchase_day,
        max(purchase_day) as last_purchase_day,
        count(*) - 1 as frequency,
        cast(sum(day_value) - arg_min(day_value, purchase_day) as double) as repeat_value
    from occasions
    group by customer_id
)

select
    cast($quarter as varchar) as quarter,
    cast($as_of_date as date) as as_of_date,
    customer_id,
    cast(frequency as integer) as frequency,
    date_diff('day', first_purchase_day, last_purchase_day) / cast($unit_days as double) as recency,
    -- T: the literature's name for the customer's age (upper case on purpose)
    date_diff('day', first_purchase_day, cast($as_of_date as date)) / cast($unit_days as double) as T,  -- noqa: CP02
    coalesce(repeat_value / nullif(frequency, 0), 0.0) as monetary_value,
    first_purchase_day,
    last_purchase_day
from customers
order by customer_id
