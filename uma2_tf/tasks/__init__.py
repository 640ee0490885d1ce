"""Losses as TFRS-style tasks: Keras layers that own a loss and its metrics, one module per loss.

    task = tasks.UMA2Task(tasks.LossConfig())          # the UMA² loss, paper eq. (2)
    model = UMA2Model(tower, task)

| module  | loss                                                                                |
|---------|-------------------------------------------------------------------------------------|
| `uma2`  | pointwise BCE over a positive and its A/B/C negatives, re-weighted by NSDN (or not) |
| `retrieval` | softmax over the batch's positives (+ shared corpus items), logQ-corrected, |
|         | through `tfrs.tasks.Retrieval` (in-batch and mixed negatives)                       |
| `frequency_estimator` | Yi et al.'s streaming estimate of each item's batch frequency (logQ)  |
| `remi`  | REMI: the sampled softmax over shared uniform negatives with interest-aware hard    |
|         | negatives (IHN), and the routing regulariser (RR) of multi-interest towers          |
"""
from uma2_tf.tasks.uma2 import (SOS_RANDOM_WEIGHT, TERMS, WEIGHT_NORMALIZATIONS,  # noqa: F401
                                LossConfig, UMA2Task, sos_loss_config, sos_random_weight)
from uma2_tf.tasks.retrieval import LOGQ, InBatchSoftmaxTask, SoftmaxConfig  # noqa: F401
