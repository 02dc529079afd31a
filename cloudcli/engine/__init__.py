"""Training engine: the fit loop, validation, optimisers, checkpoints, distributed helpers."""
