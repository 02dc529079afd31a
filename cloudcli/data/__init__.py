"""Data: Kaggle-format IO, the demo generator, the preprocessed cache, folds."""
