-- customer_value_holdout: purchase occasions (distinct purchase days) of each customer in the period after the
-- as-of date, for the calibration of the customer-value models (predicted against actual purchases).
-- Input: cleaned_sales. Parameters:
--   $as_of_end     the first instant after the as-of date: the holdout period starts here
--   $holdout_end   the first instant after the holdout period
select
    customer_id,
    count(distinct cast(invoice_date as date)) as holdout_purchases
from cleaned_sales
where invoice_date >= $as_of_end and invoice_date < $holdout_end
group by customer_id
order by customer_id
