"""Per-key limits: which models a key may use, its request and token rates, its spend
limits (total, per UTC day, per UTC month) and its expiry.

- policy.py: the limits as stored on a key and read with it at authentication (`KeyLimits`),
  model patterns, durations;
- rates.py: rpm/tpm counters shared by every worker and node (database buckets);
- spend.py: the key's spend reserved with the hold and corrected with the settle;
- admission.py: the checks `Pipeline.admit` runs, their errors and rate-limit headers.

A key with no limit set has `KeyRecord.limits is None` and pays nothing for any of this.
"""
