"""How a handler tells the consumer whether a failure is worth retrying."""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying will not help (bad input, configuration error): park the message in `.dead` at once."""


class TransientError(Exception):
    """Worth retrying later (a dependency is down or slow)."""


class PublishError(Exception):
    """The broker did not confirm a publish (unreachable, timed out, or the message was unroutable)."""


def is_permanent(exc: BaseException) -> bool:
    """Permanent when marked so, or when the error says it is not retryable (e.g. YClients 401/422)."""
    if isinstance(exc, PermanentError):
        return True
    if isinstance(exc, TransientError):
        return False
    return getattr(exc, "retryable", True) is False
