-- rejected_sales: every raw row removed by cleaning, exactly as loaded, with the reason.
-- Input: sales_classified (see sales_classified.sql).
select
    invoice, stock_code, description, quantity, invoice_date, price, customer_id, country, store,
    _source_file, _source_sha256, _sheet, _row_number, _loaded_at,
    rejection_reason
from sales_classified
where rejection_reason is not null
