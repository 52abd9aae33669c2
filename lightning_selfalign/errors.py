"""The one exception type for user mistakes; the CLI prints it as a single line."""


class UserError(ValueError):
    """A mistake the user can fix (bad input file, bad flag, missing dependency).

    The message must name the file and line, the field or the ``--flag``, and the fix.
    ``selfalign`` prints it as ``error: <message>`` and exits with status 2, never a traceback.
    """
