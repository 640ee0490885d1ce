"""The batch contract between samplers, models and tasks: the keys of a training example and the
labels of the negative spaces.

    batch[batch_keys.POS_ITEM]      # int64[B]        the clicked item
    batch[batch_keys.NEG_ITEMS]     # int64[B, N]     its negatives (0 in padded slots)
    batch[batch_keys.NEG_SPACE]     # int32[B, N]     SPACE_A, SPACE_B or SPACE_C
    batch[batch_keys.NEG_RECALLED]  # float32[B, N]   1 for A and B (the ER task's label)
    batch[batch_keys.NEG_EXPOSED]   # float32[B, N]   1 for A (the RE task's label)
    batch[batch_keys.NEG_MASK]      # float32[B, N]   0 for padded slots
    batch[batch_keys.FILL_EVENTS_KEY]  # int32[B, len(FILL_EVENTS)]
    batch[batch_keys.CORPUS_ITEMS]  # int64[B']        extra candidates shared by the batch (mixed)

In-batch samplers (`in_batch`, `mixed`) give no NEG_* keys: the other positives are the negatives.

The user's fields travel under the record's names (`schema.USER_ID`, `schema.HISTORY`, ...).
"""

# The three spaces of a request's negatives (DESIGN: A exposed-unclicked, B recalled-unexposed,
# C never recalled).
SPACE_A, SPACE_B, SPACE_C = 0, 1, 2
SPACE_NAMES = ("A", "B", "C")

POS_ITEM = "pos_item"
NEG_ITEMS = "neg_items"
NEG_SPACE = "neg_space"
NEG_RECALLED = "neg_recalled"
NEG_EXPOSED = "neg_exposed"
NEG_MASK = "neg_mask"
FILL_EVENTS_KEY = "fill_events"
CORPUS_ITEMS = "corpus_items"
# Per example: A pool smaller than asked (sampled with replacement) / empty (slots padded); same for
# B; C slots left padded because too few draws fell outside the recall set.
FILL_EVENTS = ("a_with_replacement", "a_padded", "b_with_replacement", "b_padded", "c_padded")
