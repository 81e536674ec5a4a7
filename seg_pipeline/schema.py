"""Short descriptions of the warehouse columns, shown in the Dagster UI's column schema of every table asset.

One description per column name (the names mean the same thing in every table); `TABLE_COLUMNS` overrides a
name where one table uses it differently. `mean_<feature>` / `median_<feature>` columns are described from
the feature's own entry.
"""

from __future__ import annotations

COLUMNS = {
    # raw and cleaned lines
    "invoice": "Invoice (order) number; C... = cancellation, A... = bad-debt adjustment",
    "stock_code": "Product code",
    "description": "Product description (segment tables: what the segment is)",
    "quantity": "Units on the line",
    "invoice_date": "Date and time of the invoice",
    "price": "Unit price",
    "customer_id": "Customer id, normalised ('17850.0' -> '17850')",
    "country": "Customer's country",
    "store": "Store id, when the source has one",
    "line_revenue": "quantity x price",
    "line_hash": "Hash of the line's values (duplicate detection)",
    "_source_file": "Source file the row came from",
    "_source_sha256": "SHA-256 of the source file",
    "_sheet": "Workbook sheet (xlsx sources)",
    "_row_number": "Row number in the source file or sheet",
    "_loaded_at": "When the file was loaded",
    "_order_rule": "NULL for sales lines (the file has an invoice column); per_row or per_day for an order-level export (how its rows make orders)",
    "quantity_value": "Quantity parsed at ingest (NULL = unparseable)",
    "price_value": "Price parsed at ingest (NULL = unparseable)",
    "invoice_ts": "Invoice date parsed at ingest (NULL = unparseable)",
    "rejection_reason": "Why cleaning removed the row",
    # quarterly
    "quarter": "Quarter partition key: the quarter's first day",
    "as_of_date": "Snapshot date: the quarter's last day",
    "recency_days": "Days from the last purchase to the as-of date",
    "frequency": "Orders (distinct invoices) in the look-back window",
    "monetary": "Revenue in the look-back window",
    "avg_order_value": "monetary / frequency",
    "distinct_products": "Distinct products bought in the window",
    "purchase_span_days": "Days from the first to the last purchase in the window",
    "tenure_days": "Days from the first purchase ever to the as-of date",
    "main_country": "Country with the customer's largest revenue",
    "main_store": "Store with the customer's largest revenue",
    "first_purchase": "First purchase in the window",
    "last_purchase": "Last purchase in the window",
    "first_purchase_ever": "First purchase in the whole history",
    "feature": "Customer feature",
    "position": "Column position in scaled_matrix",
    "log_transformed": "log1p applied before scaling",
    "kept": "Used by the model (not pruned)",
    "dropped_reason": "Why the feature is left out of the model",
    "center": "Scaler centre (log space)",
    "scale": "Scaler scale (log space)",
    "k": "Number of clusters",
    "inertia": "k-means inertia (elbow)",
    "silhouette": "Silhouette of the fit (sampled on large data)",
    "in_business_range": "k inside the business range",
    "chosen": "The k of the model in force",
    "min_cluster_share": "Smallest cluster's share of the quarter's customers",
    "n_customers": "Customers of the quarter",
    "artifact_path": "Model file, relative to the pipeline home",
    "artifact_sha256": "SHA-256 of the model file",
    "reason": "Why this k",
    "model_version": "Version of the segment model that named the rows",
    "fitted_quarter": "Quarter the model in force was fitted on",
    "parent_version": "Model a refit started from",
    "decision": "initial_fit, reused or refit",
    "decision_reason": "Why the model was fitted, kept or refitted",
    "current_silhouette": "Silhouette of the model in force on this quarter",
    "far_share": "Share of customers far from every centroid of the kept model",
    "silhouette_drop": "Kept model's fit silhouette minus this quarter's",
    "max_silhouette_drop": "Drift threshold on the silhouette drop",
    "max_far_share": "Drift threshold on far_share",
    "refit_every_quarters": "Refit cadence in quarters (0 = never)",
    "refit_ari": "Adjusted Rand index of the kept and the refitted model on the quarter",
    "refit_name_change_share": "Share of the quarter's customers the refit renamed",
    "cluster": "Cluster index of the model (arbitrary; the name is the meaning)",
    "segment": "Segment name",
    "previous_quarter": "The quarter moved from",
    "from_segment": "Segment last quarter, or new / returning",
    "to_segment": "Segment this quarter, or lapsed",
    "from_model_version": "Model version of the previous quarter",
    "to_model_version": "Model version of this quarter",
    "rank": "Segment value rank (higher = more valuable)",
    "customers": "Customers",
    "share_customers": "Share of the quarter's customers",
    "revenue": "Revenue in the look-back window",
    "share_revenue": "Share of the quarter's revenue",
    "action": "Recommended action",
    "unit": "store or country: what concentration is measured over",
    "share_of_total_revenue": "The store's share of all revenue",
    "top10_revenue_share": "Share of the store's revenue from its 10 largest customers",
    "top10pct_customers": "Customers in the store's top 10%",
    "top10pct_revenue_share": "Share of the store's revenue from its top 10% of customers",
    "largest_customer_share": "Share of the store's revenue from its largest customer",
    "assessed": "Enough customers to be flagged",
    "flagged": "Dependence above the threshold",
    "segment_mix": "Customers per segment",
    "revenue_at_risk": "Past revenue of a silent high-value customer",
    "step": "Pipeline step",
    "fingerprint": "What the step last consumed",
    "updated_at": "When the step last published",
}
TABLE_COLUMNS = {
    ("winback_list", "rank"): "Position on the win-back list (1 = most revenue at risk)",
    ("store_concentration", "store"): "Store (or country)",
}


def describe(table: str, column: str) -> str:
    if (table, column) in TABLE_COLUMNS:
        return TABLE_COLUMNS[(table, column)]
    if column in COLUMNS:
        return COLUMNS[column]
    for prefix in ("mean_", "median_"):
        if column.startswith(prefix) and column[len(prefix) :] in COLUMNS:
            return f"{prefix[:-1].capitalize()} over the segment: {COLUMNS[column[len(prefix) :]][0].lower()}{COLUMNS[column[len(prefix) :]][1:]}"
    return ""
