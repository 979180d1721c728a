"""The one exception type a user sees: a problem with their input, said in one line."""

from __future__ import annotations

__all__ = ["HeadstartError"]


class HeadstartError(Exception):
    """A problem with the user's data, arguments or environment.

    The command line prints the message alone, without a traceback, so the message must
    name what is wrong (the file, the parameter, the value) and what to do about it.
    """
