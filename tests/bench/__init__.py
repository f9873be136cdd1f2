"""`make bench` (`python -m tests.bench`): the gateway's speed, measured against a direct
upstream on this machine.

Modules: `upstream` (fast fake OpenAI server), `load` (raw-socket load generator), `procs`
(child processes and /proc readers), `hot` (in-process hot-path costs), `run` (the phases),
`report` (Markdown table), `profile` (cProfile of one worker's per-request work, run on its own
with `python -m tests.bench.profile`). Results go to stdout and to var/bench.json.
"""
