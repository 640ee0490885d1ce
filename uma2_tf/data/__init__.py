"""Request logs: the record schema and its validation, the simulator, TFDS builders, A/B/C sampling."""
