-- raw_transactions: the rows of newly loaded source files, exactly as read (under canonical column
-- names, with file, sheet, row number and load time), plus what each value parses to. Text sources keep
-- every value as its text; a typed source (Parquet) keeps its numbers and timestamps typed only: their
-- text column is NULL and the *_value / invoice_ts column holds the value as the file has it.
-- Nothing is dropped or changed: a value that does not parse keeps its text and gets NULL beside it, so
-- the data contract can count it and cleaning can reject the row with a reason.
-- invoice_ts is in UTC: a timestamp with an offset or zone (2010-12-31T23:30-01:00, ...Z, +0530, UTC,
-- Europe/Paris) is converted to UTC (2011-01-01 00:30); one without is taken as written, as UTC. An offset
-- or zone that does not parse (+99:00, Mars/Base) leaves NULL (the row is rejected as unparseable_date),
-- never the time without its offset. A 12-hour time (11:30 PM) is read with its AM/PM (the plain cast would
-- drop it: 12:10 AM as 12:10).
-- The identifiers the pipeline keys on (customer_key, invoice_key, stock_code_key) are in one normal
-- form: Unicode NFC, format characters (category Cf: zero-width space, ZWNJ, BOM, soft hyphen...)
-- removed, whitespace (Unicode White_Space: tab, CR, LF, NBSP, ideographic space...) trimmed at both
-- ends and each inner run of it made one space; the empty result is NULL. A value of printable ASCII
-- without leading, trailing or double spaces is already in that form and is taken as it is (the fast
-- path: no regular expression replaces anything in it). The expression is written out for each of
-- the three columns (a query cannot define a macro), in the inner query; the readers' rows are its
-- only input (the loader puts them first as `WITH __load_raw AS (...)`).
-- customer_key is the customer id in that form, then: a numeric-looking id is a number (float text
-- "17850.0" and leading zeros "0017850" are customer 17850), any other id is kept, the empty cell ('',
-- 'nan', 'NA', 'None', 'null') is NULL; with the mapping's `customer_ids: verbatim` the numeric rule is
-- not applied.
-- Input: __load_raw (what the readers produced: the text, and for typed sources the numbers and
-- timestamps as they are in _*_native, NULL otherwise). Parameters: $date_format (NULL, or a strptime
-- format for exports whose dates are neither ISO nor m/d/Y), $customer_ids ('numeric' or 'verbatim').
select
    l.* exclude (_quantity_native, _price_native, _invoice_ts_native, _customer_native, _customer_text),
    coalesce(l._quantity_native, try_cast(trim(l.quantity) as double)) as quantity_value,
    coalesce(l._price_native, try_cast(trim(l.price) as double)) as price_value,
    coalesce(
        l._invoice_ts_native,
        case when $date_format is not null then try_strptime(trim(l.invoice_date), $date_format) end,
        case
            when regexp_matches(l.invoice_date, '\d\s*[AaPp][Mm]\s*$')
                then try_strptime(
                    regexp_replace(trim(l.invoice_date), '\s*([AaPp][Mm])$', ' \1'),
                    ['%Y-%m-%d %I:%M %p', '%Y-%m-%d %I:%M:%S %p', '%m/%d/%Y %I:%M %p', '%m/%d/%Y %I:%M:%S %p']
                )
            when
                regexp_matches(
                    l.invoice_date,
                    '\d:\d\d(:\d\d(\.\d+)?)?\s*([Zz]|[+-]\d\d(:?\d\d){0,2}|[A-Za-z]{3,}(/[A-Za-z_+-]+)*)\s*$'
                )
                then if(
                    coalesce(try_cast(regexp_extract(l.invoice_date, '[+-](\d\d)(:?\d\d){0,2}\s*$', 1) as integer), 0)
                    <= 14,
                    timezone('UTC', try_cast(regexp_replace(trim(l.invoice_date), '\s+([+-]\d)', '\1') as timestamptz)),
                    null
                )
            else coalesce(
                try_cast(trim(l.invoice_date) as timestamp),
                try_strptime(
                    trim(l.invoice_date),
                    ['%m/%d/%Y %H:%M', '%m/%d/%Y %H:%M:%S', '%m/%d/%y %H:%M', '%Y%m%d', '%d.%m.%Y %H:%M']
                )
            )
        end
    ) as invoice_ts,
    case
        when l._customer_text is null or lower(l._customer_text) in ('nan', 'na', 'none', 'null') then null
        when $customer_ids = 'verbatim' then l._customer_text
        when
            l._customer_native >= 0 and l._customer_native < 1e15 and l._customer_native = trunc(l._customer_native)
            then cast(cast(l._customer_native as bigint) as varchar)
        when regexp_matches(l._customer_text, '^[0-9]+(\.0+)?$')
            then coalesce(nullif(ltrim(regexp_replace(l._customer_text, '\.0+$', ''), '0'), ''), '0')
        else l._customer_text
    end as customer_key
from (
    select
        l.*,
        case
            when regexp_full_match(l.customer_id, '[!-~]+( [!-~]+)*') then l.customer_id
            else nullif(trim(regexp_replace(
                regexp_replace(nfc_normalize(l.customer_id), '\p{Cf}+', '', 'g'),
                '[\s\p{Z}\x0B\x{85}]+', ' ', 'g'
            )), '')
        end as _customer_text,
        case
            when regexp_full_match(l.invoice, '[!-~]+( [!-~]+)*') then l.invoice
            else nullif(trim(regexp_replace(
                regexp_replace(nfc_normalize(l.invoice), '\p{Cf}+', '', 'g'),
                '[\s\p{Z}\x0B\x{85}]+', ' ', 'g'
            )), '')
        end as invoice_key,
        case
            when regexp_full_match(l.stock_code, '[!-~]+( [!-~]+)*') then l.stock_code
            else nullif(trim(regexp_replace(
                regexp_replace(nfc_normalize(l.stock_code), '\p{Cf}+', '', 'g'),
                '[\s\p{Z}\x0B\x{85}]+', ' ', 'g'
            )), '')
        end as stock_code_key
    from __load_raw as l
) as l
