"""Errors a user can fix. The CLI prints them as one line and exits non-zero, no traceback."""

import errno
import re


class CloudcliError(Exception):
    """Base class: the message names the file, row or parameter and says how to fix it."""


class ConfigError(CloudcliError):
    """params.yaml is wrong: unknown key, wrong type, value out of range."""


class DataError(CloudcliError):
    """An input file is missing, unreadable or malformed."""


_FS_HINTS = {
    errno.ENOSPC: "the disk is full: free space there (or move the project to a bigger disk), then rerun",
    errno.EDQUOT: "the disk quota is used up: free space within it, then rerun",
    errno.EROFS: "the file system is read-only: remount it writable or work in a writable folder",
    errno.EACCES: "permission denied: make it readable/writable for this user (chmod, chown) or work elsewhere",
    errno.EPERM: "operation not permitted: check its owner and permissions",
    errno.EFBIG: "file too large for this file system or the shell's file size limit (ulimit -f)",
    errno.EIO: "input/output error: the disk or network file system failed; check it, then rerun",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or lower the workers",
}
_TEMPORARY = re.compile(r"(^|/)\.([^/]+)\.\d+\.[^/]*\.tmp(/new)?")  # io.atomic_path's temporary sibling of an output


def _output_name(filename) -> str:
    return _TEMPORARY.sub(r"\1\2", str(filename))


def describe_os_error(e: OSError) -> str:
    """One line for a file-system fault: the file (the output being written, not its temporary
    sibling), what happened and what to do."""
    name = None if e.filename is None else _output_name(e.filename)
    if e.filename2 is not None:
        name = f"{name} -> {_output_name(e.filename2)}"
    what = _FS_HINTS.get(e.errno) or (e.strerror or str(e)).lower()
    return f"{name}: {what}" if name else what[0].upper() + what[1:]
