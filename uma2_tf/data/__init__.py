"""The record contract and the training input: schema, validation, reading, batch keys, samplers.

Where datasets come from (the simulator, real logs, the TFDS builders) is `uma2_tf.sources`.
"""
