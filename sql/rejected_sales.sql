-- rejected_sales: every raw row removed by cleaning, exactly as loaded, with the reason.
-- Input: sales_rules (rows breaking a rule) and duplicate_lines (copies of an earlier line).
select
    s.invoice, s.stock_code, s.description, s.quantity, s.invoice_date, s.price, s.customer_id,
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
