"""The one exception type for mistakes a user can fix (bad data, bad options, bad checkpoints)."""


class UserError(Exception):
    """An expected problem with the user's input; the scripts print its message without a traceback."""
