-- customer_features: one row per customer active in the look-back window ending at the as-of date.
-- Input: cleaned_sales. Parameters:
--   $quarter       the partition key (quarter start date, text)
--   $as_of_date    the snapshot date (the quarter's last day); only transactions before $as_of_end count
--   $as_of_end     the first instant after the as-of date
--   $window_start  the first instant of the look-back window (as_of_end minus the window length)
-- Invoice totals first, then customer totals: cheaper than one pass with count(distinct invoice).
-- Money is summed as DECIMAL: exact, so the result does not depend on the order DuckDB's threads add in
-- (a DOUBLE sum can differ in its last bits from run to run, and so would the model built on it).
with history as (
    select customer_id, invoice, invoice_date, stock_code, line_revenue, country, store
    from cleaned_sales
    where invoice_date < $as_of_end
),

first_seen as (
    select customer_id, min(invoice_date) as first_purchase_ever
    from history
    group by customer_id
),

window_lines as (
    select * from history where invoice_date >= $window_start
),

invoices as (
    select
        customer_id,
        invoice,
        min(invoice_date) as invoice_date,
        sum(cast(line_revenue as decimal(38, 6))) as invoice_revenue
    from window_lines
    group by customer_id, invoice
),

customer_totals as (
    select
        customer_id,
        count(*) as frequency,
        cast(sum(invoice_revenue) as double) as monetary,
        min(invoice_date) as first_purchase,
        max(invoice_date) as last_purchase
    from invoices
    group by customer_id
),

customer_lines as (
    select
        customer_id,
        count(distinct stock_code) as distinct_products
    from window_lines
    group by customer_id
),

country_revenue as (
    select customer_id, country, store, sum(cast(line_revenue as decimal(38, 6))) as revenue
    from window_lines
    group by customer_id, country, store
),

main_place as (
    -- the country (and store, when the source has one) where the customer spends most
    select
        customer_id,
        arg_max(country, revenue) as main_country,
        arg_max(store, revenue) as main_store
    from country_revenue
    group by customer_id
)

select
    cast($quarter as varchar) as quarter,
    cast($as_of_date as date) as as_of_date,
    t.customer_id,
    date_diff('day', cast(t.last_purchase as date), cast($as_of_date as date)) as recency_days,
    t.frequency,
    t.monetary,
    t.monetary / t.frequency as avg_order_value,
    l.distinct_products,
    date_diff('day', cast(t.first_purchase as date), cast(t.last_purchase as date)) as purchase_span_days,
    date_diff('day', cast(f.first_purchase_ever as date), cast($as_of_date as date)) as tenure_days,
    p.main_country,
    p.main_store,
    t.first_purchase,
    t.last_purchase,
    f.first_purchase_ever
from customer_totals as t
join customer_lines as l using (customer_id)
join first_seen as f using (customer_id)
join main_place as p using (customer_id)
order by t.customer_id
