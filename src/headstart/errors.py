"""The one exception type a user sees: a problem with their input, said in one line."""

from __future__ import annotations

__all__ = ["HeadstartError", "first_line"]


class HeadstartError(Exception):
    """A problem with the user's data, arguments or environment.

    The command line prints the message alone, without a traceback, so the message must
    name what is wrong (the file, the parameter, the value) and what to do about it.
    """


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (its type's name when it has none): what
    a one-line message can quote of it."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
