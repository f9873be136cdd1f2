"""Persistence for TokModel: accounts, API keys, prepaid credits and the usage log.

`open_store(url)` connects to embedded SQLite (`sqlite:///var/tokmodel.db`) or PostgreSQL
(`postgresql://...`), applies pending migrations and returns a `Store`. Money is integer
nano-credits (1 credit = 1,000,000,000); charging is hold -> forward -> settle, every
movement of money is an append-only ledger entry, and a balance never goes below zero however
many workers and nodes share the database (a cost nothing covers becomes a recorded debt).
"""

from __future__ import annotations

from .errors import AccountExists, AccountNotFound, StoreError
from .records import Account, KeyRecord, StoredResponse, UsageRecord
from .store import Store, open_store

__all__ = [
    "Account",
    "AccountExists",
    "AccountNotFound",
    "KeyRecord",
    "Store",
    "StoreError",
    "StoredResponse",
    "UsageRecord",
    "open_store",
]
