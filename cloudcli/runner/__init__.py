"""`cloudcli run`: the stages `dvc repro` would run, several at once.

plan.py: what DVC would run, its order and edges, and recording a stage that ran (dvc commit);
local.py: running stages side by side on this machine, each with its share of the GPUs and cores.
"""
