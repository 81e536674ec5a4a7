-- duplicate_lines: sales lines that repeat another line with the same normalised values ('17850.0' and
-- '17850' are the same customer). The first occurrence by file name, sheet and row stays, whenever each
-- file arrived (so loading two files at once or one after the other keeps the same copy). A later copy in
-- another sheet of the same workbook (UCI repeats 1-9 Dec 2010 in both sheets) is
-- 'repeated_across_sheets', any other copy 'duplicate_line'. is_new: the copy is a staged line; a published
-- line that loses to a new one (is_new false) makes cleaning start again over every row.
-- Inputs: batch_lines (the staged cleaned_sales rows of this batch), published_lines (cleaned_sales
-- rows published before, kept; empty when everything is recleaned). Only lines whose hash occurs more
-- than once are compared value by value.
with repeated_hashes as (
    select line_hash
    from (
        select line_hash from batch_lines
        union all
        select line_hash from published_lines
    )
    group by line_hash
    having count(*) > 1
),

candidates as (
    select
        b.invoice, b.stock_code, b.description, b.quantity, b.invoice_date, b.price, b.customer_id,
        b.country, b.store, b._source_file, b._sheet, b._row_number,
        true as is_new
    from batch_lines as b
    where b.line_hash in (select line_hash from repeated_hashes)
    union all
    select
        p.invoice, p.stock_code, p.description, p.quantity, p.invoice_date, p.price, p.customer_id,
        p.country, p.store, p._source_file, p._sheet, p._row_number,
        false as is_new
    from published_lines as p
    where p.line_hash in (select line_hash from repeated_hashes)
),

ranked as (
    select
        c.*,
        row_number() over w as occurrence,
        first_value(c._source_file) over w as first_file,
        first_value(c._sheet) over w as first_sheet
    from candidates as c
    window w as (
        partition by c.invoice, c.stock_code, c.description, c.quantity, c.invoice_date, c.price,
            c.customer_id, c.country, c.store
        order by c._source_file, c._sheet, c._row_number
    )
)

select
    _source_file,
    _sheet,
    _row_number,
    is_new,
    case
        when first_file = _source_file and first_sheet is distinct from _sheet then 'repeated_across_sheets'
        else 'duplicate_line'
    end as duplicate_reason
from ranked
where occurrence > 1
