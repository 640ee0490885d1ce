"""The paper's Table 1 as an experiment: a grid of training runs, several seeds, one report; and
the negative samplers' table the same way.

    grid            the grids' cells (`RunSpec`, `quick_grid`, `full_grid`, `samplers_grid`) and
                    training them (`run_grid`)
    report          Table 1's table, paired tests and chart (`write_report`)
    samplers_table  the samplers' table: accuracy, popularity bias, cost, paired tests against
                    uniform and UMA², the samplers' claims (`write_report`)

`python -m pipelines.experiment` (`make experiment`) runs one, then the other
(`--table=samplers` for the samplers' table).
"""
