from tests.conftest import read_table


def test_full_run_materialises_every_quarter(full_run):
    home, quarters = full_run
    assert len(quarters) == 8  # 2009-Q4 .. 2011-Q3 for data from 2009-12-01 to 2011-12-09
    got = read_table(home, "SELECT DISTINCT quarter FROM segment_migration_history ORDER BY 1")["quarter"].tolist()
    assert got == quarters
