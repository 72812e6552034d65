"""Errors a user can fix.

Every problem with the user's input (config, data files, model) is raised as :class:`HeadsieveError`
with a one-line message that names the file and line, or the config key, and says what to change.
The command line prints it as a single ``headsieve: error: ...`` line and exits non-zero.
"""


class HeadsieveError(Exception):
    """A user-facing error; ``str(err)`` is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
