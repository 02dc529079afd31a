"""What turns probabilities into masks, shared by tune, submit and report.

`rules` (a threshold x min_area x min_component rule per class), `search` (its exact grid search on
out-of-fold maps), `vote` (combining models and class scores), `twostage` (the 3rd place's
two-stage fit), `tuned` (loading the pipeline tune chose, to apply it).
"""
