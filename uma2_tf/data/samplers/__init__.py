"""Negative samplers: one module per sampler behind `base.Sampler`, and the pipeline that runs them.

    config = samplers.SamplingConfig(strategy="ss_abc_fixed")       # the A/B/C sampler (`spaces`)
    ds = samplers.make_training_dataset(dataset, config, batch_size=512)

| module       | what                                                                     |
|--------------|--------------------------------------------------------------------------|
| `base`       | the interface, `make_training_dataset`, `sample_dataset`                 |
| `config`     | `SamplingConfig`: which sampler, its knobs; `build` makes the sampler    |
| `spaces`     | negatives from the request's own spaces A/B/C (SS-A ... SS-ABC(fixed))   |
| `popularity` | popularity^α over the corpus, drawn in-graph (the `popularity` sampler)  |
| `hybrid`     | a share of space-B ("advanced") negatives, the rest naive corpus draws   |
| `in_batch`   | the batch's other positives are the negatives (softmax)                  |
| `mixed`      | in-batch plus uniform corpus items shared by the batch; also `sampled`:  |
|              | the shared corpus items alone (REMI's sampled softmax)                   |
| `ragged_ops` | in-graph set operations on a batch's request rows, shared by samplers    |
"""
from uma2_tf.data.samplers.base import (Sampler, SamplerConfig, count_fill_events,  # noqa: F401
                                        make_training_dataset, sample_dataset)
from uma2_tf.data.samplers.config import (SOFTMAX_STRATEGIES, STRATEGIES,  # noqa: F401
                                          SamplingConfig)
from uma2_tf.data.samplers.popularity import (POPULARITY_SOURCES,  # noqa: F401
                                              popularity_probabilities)
from uma2_tf.data.samplers.spaces import (C_DISTRIBUTIONS, NegativeSampler,  # noqa: F401
                                          check_config_for_schema, stage_ids)
