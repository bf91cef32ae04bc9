"""The one exception of the data layer.

Every bad input (a corrupt or silent audio file, an unknown instrument, an existing output
directory, a manifest of an unknown version, ...) raises `DatasetError` with a message that names
the file or value and says what was expected. It subclasses ValueError so the CLI reports it as a
usage error (exit status 2) without a traceback.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """Bad input to the data layer: the message names the file or value and what was expected."""
