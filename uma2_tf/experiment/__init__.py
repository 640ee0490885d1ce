"""The paper's Table 1 as an experiment: a grid of training runs, several seeds, one report; the
negative samplers' table and the ablation of UMA²'s gain across worlds the same way.

    grid            the grids' cells (`RunSpec`, `quick_grid`, `full_grid`, `samplers_grid`,
                    `ablation_grid`) and training them (`run_grid`)
    grid_cost       what a grid costs, measured per cell before it trains, and projected on one
                    GPU from the steps' FLOPs (`measure`, `write_report`; `--cost_only`)
    report          Table 1's table, paired tests and chart (`write_report`)
    samplers_table  the samplers' table: accuracy, popularity bias, cost, paired tests against
                    uniform and UMA², the samplers' claims (`write_report`)
    ablation_table  where UMA²'s gain comes from, per world: the multi-task-only and own-tables
                    ablations against the GMM and UMA², paired tests, the gain's decomposition
                    (`write_report`)

`python -m pipelines.experiment` (`make experiment`) runs one of them (`--table=samplers` for the
samplers' table, `--table=ablation --datasets=...` for the ablation).
"""
