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


def check_contract(component, base: type, key: str, *, subclass: bool = True) -> None:
    """Refuse, in one line naming the config ``key``, a component that breaks ``base``'s declared contract
    (its public methods): not a subclass where one is required, or lacking a method the run will call.
    Checked once where the component is built, not as an AttributeError mid-run."""
    declared = [name for name, member in vars(base).items() if callable(member) and not name.startswith("_")]
    missing = [name for name in declared if not callable(getattr(component, name, None))]
    if isinstance(component, base) or not (subclass or missing):
        return
    got, want = type(component), f"{base.__module__}.{base.__qualname__}"
    got = f"{got.__module__}.{got.__qualname__}"
    lacks = f"lacks {', '.join(missing)}" if missing else ""
    if subclass:
        raise UserError(f"{key}: {got} is not a {want}{f' and {lacks}' if lacks else ''}: subclass {base.__qualname__}")
    raise UserError(f"{key}: {got} {lacks} (the methods of {want})")
