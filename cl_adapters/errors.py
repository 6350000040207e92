"""The one exception type for user mistakes (the CLI prints its message as a single line), and how any
error is said in one line."""


class UserError(ValueError):
    """Bad config, bad data or a missing file; the message names the culprit."""


def one_line(error: BaseException) -> str:
    """The error as one line: a user mistake's message, else the exception type and message."""
    text = " ".join(str(error).split())
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text[:400]}" if text else type(error).__name__
