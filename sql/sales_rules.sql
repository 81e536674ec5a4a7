-- sales_rules (a view): every raw row being cleaned with normalised values and the first cleaning rule
-- it breaks (rule_reason, NULL = kept), and a hash of the normalised line. Exact duplicates (lines equal
-- after normalisation) are found separately (duplicate_lines.sql).
-- Every rule judges a row by its own values and its own file only, never by the other rows being cleaned
-- with it, so a row gets the same verdict whether its file arrives alone or with others:
-- Inputs: raw_batch, the raw_transactions rows being cleaned (the rows of newly loaded source files, or
-- every row); sales_bounds, the scale of ALL raw rows (sql/batch_bounds.sql, one row: qty_limit,
-- price_limit), which the implausible_* rules compare values with.
-- Cancellations follow the file's own convention (raw _invoice_rule, set at ingest): 'uci' (a file in the
-- UCI layout: invoice C... = cancellation, A... = bad-debt adjustment), 'prefix:<X>' (the mapping's
-- `cancellations: {invoice_prefix: X}`), NULL (another export: its invoice ids are ids; a return is a
-- negative quantity, non_positive_quantity).
-- Order-level exports (no invoice column; raw _order_rule per_row or per_day) get an order key instead
-- of an invoice: ORD-<customer>-<timestamp> (per_row: a customer's rows with the same timestamp are one
-- order) or ORD-<customer>-<date> (per_day: a customer's rows of one day are one order).
with non_product_codes as (
    -- service lines, fees and adjustments that are not product sales (UCI Online Retail II)
    select * from (
        values
        ('POST'), ('DOT'), ('M'), ('D'), ('C2'), ('S'), ('B'), ('BANK CHARGES'), ('AMAZONFEE'),
        ('ADJUST'), ('ADJUST2'), ('PADS'), ('CRUK'), ('CARRIAGE'), ('DISCOUNT')
    ) as t (code)
),

normalised as (
    select
        r.*,
        r.stock_code_key as stock_code_norm,  -- normalised at ingest (sql/raw_transactions.sql)
        nullif(nullif(trim(r.description), ''), 'nan') as description_norm,
        r.customer_key as customer_norm,  -- normalised at ingest (sql/raw_transactions.sql)
        nullif(trim(r.country), '') as country_norm,
        nullif(trim(r.store), '') as store_norm
    from raw_batch as r
),

keyed as (
    select
        n.*,
        case
            when n._order_rule is null then upper(n.invoice_key)
            when n.invoice_ts is not null
                then
                    'ORD-' || coalesce(n.customer_norm, '') || '-'
                    || if(
                        n._order_rule = 'per_day',
                        strftime(n.invoice_ts, '%Y%m%d'),
                        strftime(n.invoice_ts, '%Y%m%dT%H%M%S')
                    )
        end as invoice_norm
    from normalised as n
)

select
    n.*,
    hash(
        n.invoice_norm, n.stock_code_norm, n.description_norm, n.quantity_value, n.invoice_ts, n.price_value,
        n.customer_norm, n.country_norm, n.store_norm
    ) as line_hash,
    case
        when n._order_rule is null and (n.invoice_norm is null or n.invoice_norm = '') then 'missing_invoice'
        when n.invoice_ts is null then 'unparseable_date'
        when
            n.invoice_ts < timestamp '1990-01-01' or n.invoice_ts > n._loaded_at + interval 1 day
            then 'date_out_of_range'
        when n.quantity_value is null then 'unparseable_quantity'
        when n.price_value is null then 'unparseable_price'
        when not isfinite(n.quantity_value) then 'non_finite_quantity'
        when not isfinite(n.price_value) then 'non_finite_price'
        when n._invoice_rule = 'uci' and starts_with(n.invoice_norm, 'C') then 'cancellation'
        when n._invoice_rule = 'uci' and starts_with(n.invoice_norm, 'A') then 'adjustment'
        when
            starts_with(n._invoice_rule, 'prefix:') and starts_with(n.invoice_norm, substr(n._invoice_rule, 8))
            then 'cancellation'
        when
            upper(n.stock_code_norm) in (select code from non_product_codes)
            or upper(n.stock_code_norm) like 'TEST%'
            or lower(n.stock_code_norm) like 'gift\_%' escape '\'
            then 'non_product_code'
        when abs(n.quantity_value) > b.qty_limit then 'implausible_quantity'
        when abs(n.price_value) > b.price_limit then 'implausible_price'
        when n.quantity_value <= 0 then 'non_positive_quantity'
        when n.price_value <= 0 then 'non_positive_price'
        when n.customer_norm is null then 'missing_customer'
    end as rule_reason
from keyed as n
cross join sales_bounds as b
