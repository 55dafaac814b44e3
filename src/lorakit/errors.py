"""lorakit's own exception types: a user mistake, as opposed to a bug.

Every check of user input (an option, a config field, a data file, an adapter folder, a model that
does not fit) raises :class:`LorakitError` with the bad value and what is allowed. The CLI prints it
as one ``error:`` line; any other exception out of lorakit's code is a bug and keeps its traceback.

``LorakitError`` subclasses ``ValueError`` so that callers catching ``ValueError`` keep working;
:class:`UnsupportedLayerError` is also a ``TypeError`` (a layer *type* lorakit cannot adapt).
This module imports nothing, so every layer, ``core`` included, may raise these.
"""

from __future__ import annotations

__all__ = ["LorakitError", "UnsupportedLayerError"]


class LorakitError(ValueError):
    """Bad input from the user (or the calling program), explained in one readable line."""


class UnsupportedLayerError(LorakitError, TypeError):
    """A target names a layer whose type lorakit cannot adapt (the message lists supported types)."""
