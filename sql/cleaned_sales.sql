-- cleaned_sales: the product sales lines kept for analysis, typed, with line revenue.
-- Input: sales_classified (see sales_classified.sql).
select
    invoice_norm as invoice,
    stock_code_norm as stock_code,
    description_norm as description,
    quantity_num as quantity,
    invoice_ts as invoice_date,
    price_num as price,
    customer_norm as customer_id,
    country_norm as country,
    store_norm as store,
    quantity_num * price_num as line_revenue,
    _source_file,
    _sheet,
    _row_number
from sales_classified
where rejection_reason is null
