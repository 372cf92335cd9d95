"""Typed errors a user can cause; the CLI and stage entry points print them as one line."""


class KwsError(Exception):
    """Base class for mistakes in input, params or environment that a user can fix."""


class ConfigError(KwsError):
    """params.yaml is missing, malformed or has an invalid value."""


class DataError(KwsError):
    """A dataset, file or archive is unusable (bad layout, checksum, format)."""


class DownloadError(KwsError):
    """A download failed (HTTP error, connection, disk full)."""


class DiskFullError(KwsError):
    """Not enough free space for an output (checked before the work, or ENOSPC while writing)."""
