"""Models: the factory over segmentation-models-pytorch, and the losses."""
