"""Request ids: `req_` and 32 hex digits, ordered by creation time.

The first 12 digits are the milliseconds since the epoch, the other 20 are random (80 bits,
from the OS), like a UUIDv7 without its version bits. The id keys the hold, both ledger
entries and the usage row of its request: with random ids every insert landed on a random
leaf of those indexes, so each request dirtied pages of its own (about 8 page writes to the
SQLite WAL and 6 page reads per request, measured under load); time-ordered ids append at
the right edge, where the requests of one commit share their pages, on PostgreSQL too.
"""

from __future__ import annotations

import os
import time


def new_request_id() -> str:
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
