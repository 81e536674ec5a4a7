"""Dagster assets, one module per pipeline stage. Each reads its inputs from the warehouse, calls pure code,
stages its output, gates it with its data contract, publishes it and reports metadata."""
