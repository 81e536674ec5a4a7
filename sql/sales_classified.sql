-- sales_classified: every raw transaction row, typed, with the reason it is rejected (NULL = kept).
-- Input: raw_transactions (all text, as loaded). Parameter: $date_format (NULL, or a strptime format
-- for exports whose dates are neither ISO nor m/d/Y).
-- The first matching rule gives the reason, in the order of the CASE below. cleaned_sales.sql and
-- rejected_sales.sql split this table; together they hold every raw row exactly once.
with non_product_codes as (
    -- service lines, fees and adjustments that are not product sales (UCI Online Retail II)
    select * from (values
        ('POST'), ('DOT'), ('M'), ('D'), ('C2'), ('S'), ('B'), ('BANK CHARGES'), ('AMAZONFEE'),
        ('ADJUST'), ('ADJUST2'), ('PADS'), ('CRUK'), ('CARRIAGE'), ('DISCOUNT')
    ) as t(code)
),

typed as (
    select
        r.*,
        upper(trim(r.invoice)) as invoice_norm,
        trim(r.stock_code) as stock_code_norm,
        nullif(nullif(trim(r.description), ''), 'nan') as description_norm,
        try_cast(r.quantity as double) as quantity_num,
        try_cast(r.price as double) as price_num,
        coalesce(
            case when $date_format is not null then try_strptime(trim(r.invoice_date), $date_format) end,
            try_cast(trim(r.invoice_date) as timestamp),
            try_strptime(trim(r.invoice_date), ['%m/%d/%Y %H:%M', '%m/%d/%Y %H:%M:%S', '%m/%d/%y %H:%M', '%Y%m%d', '%d.%m.%Y %H:%M'])
        ) as invoice_ts,
        -- IDs arrive as float text ("17850.0"); the empty cell as '', 'nan', 'NA' or 'None'
        case
            when r.customer_id is null or lower(trim(r.customer_id)) in ('', 'nan', 'na', 'none', 'null') then null
            else regexp_replace(trim(r.customer_id), '\.0+$', '')
        end as customer_norm,
        nullif(trim(r.country), '') as country_norm,
        nullif(trim(r.store), '') as store_norm
    from raw_transactions as r
),

classified as (
    select
        t.*,
        case
            when t.invoice_norm is null or t.invoice_norm = '' then 'missing_invoice'
            when t.invoice_ts is null then 'unparseable_date'
            when t.quantity_num is null then 'unparseable_quantity'
            when t.price_num is null then 'unparseable_price'
            when t.invoice_norm like 'C%' then 'cancellation'
            when t.invoice_norm like 'A%' then 'adjustment'
            when upper(t.stock_code_norm) in (select code from non_product_codes)
                or upper(t.stock_code_norm) like 'TEST%'
                or lower(t.stock_code_norm) like 'gift\_%' escape '\'
                then 'non_product_code'
            when t.quantity_num <= 0 then 'non_positive_quantity'
            when t.price_num <= 0 then 'non_positive_price'
            when t.customer_norm is null then 'missing_customer'
        end as rule_reason
    from typed as t
),

deduplicated as (
    -- exact duplicates among the rows the rules keep: the first occurrence stays; a later copy in
    -- another workbook sheet (UCI repeats 1-9 Dec 2010 in both sheets) has its own reason
    select
        c.*,
        row_number() over w as occurrence,
        first_value(c._sheet) over w as first_sheet
    from classified as c
    where c.rule_reason is null
    window w as (
        partition by c.invoice, c.stock_code, c.description, c.quantity, c.invoice_date, c.price,
            c.customer_id, c.country, c.store
        order by c._source_file, c._sheet, c._row_number
    )
)

select
    d.* exclude (occurrence, first_sheet, rule_reason),
    case
        when d.occurrence = 1 then null
        when d.first_sheet is distinct from d._sheet then 'repeated_across_sheets'
        else 'duplicate_line'
    end as rejection_reason
from deduplicated as d
union all by name
select c.* exclude (rule_reason), c.rule_reason as rejection_reason
from classified as c
where c.rule_reason is not null
