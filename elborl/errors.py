"""User-facing errors: bad input that the CLI reports in one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (params, prompt files, image folders, weights).

    The message must name the file, the key or line, what was expected and what was found. The CLI
    prints it without a traceback and exits with code 2.
    """
