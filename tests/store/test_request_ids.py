"""Request ids: the documented shape, unique, and ordered by creation time (what keeps the
holds', ledger's and usage log's indexes appending at their right edge)."""

from __future__ import annotations

import re
import time

from runtime.request_ids import new_request_id


def test_ids_have_the_shape_clients_see_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_later_sort_later() -> None:
    ids = []
    for _ in range(20):
        ids.append(new_request_id())
        time.sleep(0.002)
    assert sorted(ids) == ids
    # the first 12 digits are the creation time in milliseconds
    made = int(ids[0][4:16], 16) / 1000
    assert abs(made - time.time()) < 5
