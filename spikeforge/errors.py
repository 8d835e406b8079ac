"""The one error type for user mistakes; a leaf module (imports nothing), so every layer can raise it.

Every error a user's input can cause (a malformed network file, target, spec or NIR graph; a model that cannot be
converted; a bad argument) is a `UserError` whose message names the file, dataset, layer, node or argument. The
command line prints it as `spikeforge <command>: error: ...` and exits 2. It subclasses ValueError, so code that
caught ValueError keeps working.
"""

__all__ = ["UserError", "size_text"]


class UserError(ValueError):
    """Bad input from the user; the message says what and where."""


def size_text(n_bytes) -> str:
    """A byte count as a message prints it: 1.5 GiB, 12 MiB, 1.56 KiB, 100 bytes (binary units, as --max-memory
    takes them; 3 significant digits, so a bound of 1 KiB is not "0.0 MiB" and 7 TiB is not "7450.6 GiB")."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
    return f"{int(n_bytes)} bytes"
