-- rejected_sales: every raw row removed by cleaning, exactly as loaded, with the reason. Values a typed
-- source (Parquet) kept typed only are shown as text (whole numbers without '.0').
-- Input: sales_rules (rows breaking a rule) and duplicate_lines (copies of an earlier line).
select
    s.invoice, s.stock_code, s.description,
    coalesce(s.quantity, regexp_replace(cast(s.quantity_value as varchar), '\.0$', '')) as quantity,
    coalesce(s.invoice_date, cast(s.invoice_ts as varchar)) as invoice_date,
    coalesce(s.price, cast(s.price_value as varchar)) as price,
    s.customer_id,
    s.country, s.store,
    s._source_file, s._source_sha256, s._sheet, s._row_number, s._loaded_at,
    coalesce(s.rule_reason, d.duplicate_reason) as rejection_reason
from sales_rules as s
left join duplicate_lines as d
    on
        d._source_file = s._source_file
        and d._sheet is not distinct from s._sheet
        and d._row_number = s._row_number
where s.rule_reason is not null or d.duplicate_reason is not null
