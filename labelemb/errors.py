"""Errors a user can fix. The entry scripts print them as one line and exit with code 2."""


class UserError(Exception):
    """Bad input (flags, data files, results folder): the message says what is wrong and the fix."""


class DataError(UserError):
    """A dataset is missing, truncated or in the wrong format."""


class DatasetMissing(DataError):
    """A dataset is not on this machine and could not be downloaded."""
