-- cleaned_sales: the product sales lines kept for analysis, typed, with line revenue.
-- Input: sales_rules, the rows breaking no rule. Exact duplicates among them are found afterwards on
-- the stored line_hash (duplicate_lines.sql) and moved to rejected_sales before publication.
select
    s.invoice_norm as invoice,
    s.stock_code_norm as stock_code,
    s.description_norm as description,
    s.quantity_value as quantity,
    s.invoice_ts as invoice_date,
    s.price_value as price,
    s.customer_norm as customer_id,
    s.country_norm as country,
    s.store_norm as store,
    s.quantity_value * s.price_value as line_revenue,
    s.line_hash,
    s._source_file,
    s._sheet,
    s._row_number
from sales_rules as s
where s.rule_reason is null
