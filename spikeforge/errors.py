"""The one error type for user mistakes; a leaf module (imports nothing), so every layer can raise it.

Every error a user's input can cause (a malformed network file, target, spec or NIR graph; a model that cannot be
converted; a bad argument) is a `UserError` whose message names the file, dataset, layer, node or argument. The
command line prints it as `spikeforge <command>: error: ...` and exits 2. It subclasses ValueError, so code that
caught ValueError keeps working.
"""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input from the user; the message says what and where."""
