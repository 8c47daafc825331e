"""Exceptions that the CLI turns into one clear line and an exit status."""


class UserError(Exception):
    """Bad input from the user: a file, flag or folder that cannot be used (CLI exit 2)."""


class TrainingDiverged(RuntimeError):
    """Losses became non-finite; the last good checkpoint is kept (CLI exit 1)."""


class RunLocked(UserError):
    """Another trainer holds the run folder's lock."""
