"""Negative samplers: one module per sampler behind `base.Sampler`, and the pipeline that runs them.

    config = samplers.SamplingConfig(strategy="ss_abc_fixed")       # the A/B/C sampler (`spaces`)
    ds = samplers.make_training_dataset(dataset, config, batch_size=512)

| module    | sampler                                                                     |
|-----------|-----------------------------------------------------------------------------|
| `base`    | the interface, `make_training_dataset`, `sample_dataset`                    |
| `spaces`  | negatives from the request's own spaces A/B/C (SS-A ... SS-ABC(fixed))      |
| `ragged_ops` | in-graph set operations on a batch's request rows, shared by samplers    |
"""
from uma2_tf.data.samplers.base import (Sampler, SamplerConfig, count_fill_events,  # noqa: F401
                                        make_training_dataset, sample_dataset)
from uma2_tf.data.samplers.spaces import (C_DISTRIBUTIONS, STRATEGIES, NegativeSampler,  # noqa: F401
                                          SamplingConfig, check_config_for_schema, stage_ids)
