"""The paper's Table 1 as an experiment: a grid of training runs, several seeds, one report.

    grid     the grid's cells (`RunSpec`, `quick_grid`, `full_grid`) and training them (`run_grid`)
    report   the finished runs' table, paired tests and chart (`write_report`)

`python -m pipelines.experiment` (`make experiment`) runs one, then the other.
"""
