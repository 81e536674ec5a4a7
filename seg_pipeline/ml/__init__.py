"""Pure, parameterised functions: scale, choose k, fit, name segments. No Dagster, no DuckDB."""
