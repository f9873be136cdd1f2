"""Exceptions raised by the store.

Every failure the store reports is a `StoreError`; database driver errors are re-raised as
`StoreError` (chained) so callers catch one family. Messages never carry key secrets.
"""

from __future__ import annotations


class StoreError(Exception):
    """A store operation failed (database unreachable, constraint broken, misuse)."""


class AccountExists(StoreError):
    """An account with that name already exists."""


class AccountNotFound(StoreError):
    """No account has that name."""
