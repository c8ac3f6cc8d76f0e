"""The project's one exception type for problems the user can fix.

Its message is a single line that names the file or value at fault and says what to
do. The command line prints it without a traceback and exits non-zero.
"""


class BrainVQError(Exception):
    """A user-facing error: bad input, a missing artefact, a wrong parameter."""
