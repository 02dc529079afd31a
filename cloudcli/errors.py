"""Errors a user can fix. The CLI prints them as one line and exits non-zero, no traceback."""


class CloudcliError(Exception):
    """Base class: the message names the file, row or parameter and says how to fix it."""


class ConfigError(CloudcliError):
    """params.yaml is wrong: unknown key, wrong type, value out of range."""


class DataError(CloudcliError):
    """An input file is missing, unreadable or malformed."""
