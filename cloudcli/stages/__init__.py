"""One module per DVC stage: `run(<params sections>, <paths>)` reads files and writes files.

Each module's PARAMS names the params.yaml sections it reads; dvc.yaml declares exactly those.
"""
