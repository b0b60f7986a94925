"""User-facing errors.

Anything a user can cause (bad path, bad spec, wrong encoder for an index, malformed file)
raises :class:`ConvirError`; the CLI prints its message without a traceback and exits 2.
Real bugs stay ordinary exceptions so they are never hidden.
"""

from __future__ import annotations


class ConvirError(Exception):
    """An error caused by input or environment that the user can fix; the message says how."""


class SpecError(ConvirError):
    """A component spec string (``kind:rest``) that cannot be resolved."""


class IndexMismatchError(ConvirError):
    """An index opened with an encoder/dimension other than the one it was built with."""
