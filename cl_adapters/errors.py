"""The one exception type for user mistakes: the CLI prints its message as a single line."""


class UserError(ValueError):
    """Bad config, bad data or a missing file; the message names the culprit."""
