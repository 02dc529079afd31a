"""The trained pipeline, carried out of the project: `cloudcli export` writes a bundle folder (the
models, their settings, the tuned rules, a manifest), `cloudcli predict` and `Predictor` apply it
to new images offline.

manifest.py: the manifest and its checks; export.py: writing a bundle; predictor.py: loading one
and predicting; inputs.py: reading images and chip folders; outputs.py: RLE CSV and label rasters;
run.py: the predict loop.
"""
