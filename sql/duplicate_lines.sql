-- duplicate_lines: rows that pass every cleaning rule but repeat an earlier line with the same normalised
-- values (what cleaned_sales would hold: '17850.0' and '17850' are the same customer). The first
-- occurrence (by file, sheet, row) stays; a later copy in another workbook sheet (UCI repeats
-- 1-9 Dec 2010 in both sheets) is 'repeated_across_sheets', any other copy 'duplicate_line'.
-- Input: sales_rules. Only lines whose hash occurs more than once are compared value by value.
with repeated_hashes as (
    select line_hash
    from sales_rules
    where rule_reason is null
    group by line_hash
    having count(*) > 1
),

ranked as (
    select
        s._source_sha256,
        s._sheet,
        s._row_number,
        row_number() over w as occurrence,
        first_value(s._sheet) over w as first_sheet
    from sales_rules as s
    where s.rule_reason is null
        and s.line_hash in (select line_hash from repeated_hashes)
    window w as (
        partition by s.invoice_norm, s.stock_code_norm, s.description_norm, s.quantity_value, s.invoice_ts,
            s.price_value, s.customer_norm, s.country_norm, s.store_norm
        order by s._source_file, s._sheet, s._row_number
    )
)

select
    _source_sha256,
    _sheet,
    _row_number,
    case when first_sheet is distinct from _sheet then 'repeated_across_sheets' else 'duplicate_line' end
        as duplicate_reason
from ranked
where occurrence > 1
