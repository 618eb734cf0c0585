"""User-facing errors: one line that names the problem and the fix, shown without a traceback."""


class Toon3dError(Exception):
    """An error caused by the user's input or environment; its message says what to do."""
