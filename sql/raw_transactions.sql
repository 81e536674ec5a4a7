-- raw_transactions: the rows of newly loaded source files, exactly as read (under canonical column
-- names, with file, sheet, row number and load time), plus what each value parses to. Text sources keep
-- every value as its text; a typed source (Parquet) keeps its numbers and timestamps typed only: their
-- text column is NULL and the *_value / invoice_ts column holds the value as the file has it.
-- Nothing is dropped or changed: a value that does not parse keeps its text and gets NULL beside it, so
-- the data contract can count it and cleaning can reject the row with a reason.
-- customer_key is the customer id in its normal form, what cleaning and every later table use: a
-- numeric-looking id is a number (float text "17850.0" and leading zeros "0017850" are customer 17850),
-- any other id is kept as written (trimmed), the empty cell ('', 'nan', 'NA', 'None') is NULL; with the
-- mapping's `customer_ids: verbatim` every id is kept as written.
-- Input: __load_raw (what the readers produced: the text, and for typed sources the numbers and
-- timestamps as they are in _*_native, NULL otherwise). Parameters: $date_format (NULL, or a strptime
-- format for exports whose dates are neither ISO nor m/d/Y), $customer_ids ('numeric' or 'verbatim').
select
    l.* exclude (_quantity_native, _price_native, _invoice_ts_native, _customer_native),
    coalesce(l._quantity_native, try_cast(trim(l.quantity) as double)) as quantity_value,
    coalesce(l._price_native, try_cast(trim(l.price) as double)) as price_value,
    coalesce(
        l._invoice_ts_native,
        case when $date_format is not null then try_strptime(trim(l.invoice_date), $date_format) end,
        try_cast(trim(l.invoice_date) as timestamp),
        try_strptime(
            trim(l.invoice_date), ['%m/%d/%Y %H:%M', '%m/%d/%Y %H:%M:%S', '%m/%d/%y %H:%M', '%Y%m%d', '%d.%m.%Y %H:%M']
        )
    ) as invoice_ts,
    case
        when l.customer_id is null or lower(trim(l.customer_id)) in ('', 'nan', 'na', 'none', 'null') then null
        when $customer_ids = 'verbatim' then trim(l.customer_id)
        when
            l._customer_native >= 0 and l._customer_native < 1e15 and l._customer_native = trunc(l._customer_native)
            then cast(cast(l._customer_native as bigint) as varchar)
        when regexp_matches(trim(l.customer_id), '^[0-9]+(\.0+)?$')
            then coalesce(nullif(ltrim(regexp_replace(trim(l.customer_id), '\.0+$', ''), '0'), ''), '0')
        else trim(l.customer_id)
    end as customer_key
from __load_raw as l
