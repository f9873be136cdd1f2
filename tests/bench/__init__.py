"""`make bench` (`python -m tests.bench`): the gateway's speed on this machine, measured in
one run against a bare Falcon passthrough served with the same gunicorn settings and against
the direct upstream; `make bench-full` (`--full`) adds the full-length parts of issue 11.

Modules: `options` (parts and presets), `run` (the run, part by part), `servers` (starting
the upstream, gateways and passthrough; the `tokmodel` command line; requests), `upstream`
(fast fake OpenAI server, steered per request by `bench:` directives), `passthrough` (the bare
passthrough: one Bearer check and a requests.Session), `served` (`tokmodel serve` with a
gunicorn setting it does not expose), `load` (raw-socket load generator), `latency`
(percentiles, worst windows), `throughput` (interleaved rounds), `streams` (slow streams on
one worker), `tails` (long concurrency-1 runs on fresh, filled and restarted databases),
`soak` and `traffic` (mixed traffic, memory, stalls), `fill` (a million usage rows straight
into the database), `databases` (SQLite files, throwaway PostgreSQL databases, their
statistics), `ledger_check` (the money check after a run), `probe/` and `probes` (garbage-
collection pauses and event-loop blocking inside the gateway, and reading them),
`gateway_logs`, `procs` (child processes and /proc readers), `hot` (in-process hot-path
costs), `report` and `report_details` (Markdown), `profile` (per-request CPU by component,
`make bench-profile`), `usage` (the usage API over a large log, `make bench-usage`).
Results go to stdout and to var/bench.json.
"""
