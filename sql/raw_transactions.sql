-- raw_transactions: the rows of newly loaded source files, exactly as read (every value as text,
-- under canonical column names, with file, sheet, row number and load time), plus what the text
-- parses to. Nothing is dropped or changed: a value that does not parse keeps its text and gets NULL
-- beside it, so the data contract can count it and cleaning can reject the row with a reason.
-- Input: __load_raw (what the readers produced: the text, and for typed sources such as Parquet the
-- numbers and timestamps as they are in _*_native, NULL otherwise). Parameter: $date_format (NULL, or a strptime format
-- for exports whose dates are neither ISO nor m/d/Y).
select
    l.* exclude (_quantity_native, _price_native, _invoice_ts_native),
    coalesce(l._quantity_native, try_cast(trim(l.quantity) as double)) as quantity_value,
    coalesce(l._price_native, try_cast(trim(l.price) as double)) as price_value,
    coalesce(
        l._invoice_ts_native,
        case when $date_format is not null then try_strptime(trim(l.invoice_date), $date_format) end,
        try_cast(trim(l.invoice_date) as timestamp),
        try_strptime(
            trim(l.invoice_date), ['%m/%d/%Y %H:%M', '%m/%d/%Y %H:%M:%S', '%m/%d/%y %H:%M', '%Y%m%d', '%d.%m.%Y %H:%M']
        )
    ) as invoice_ts
from __load_raw as l
