"""`make bench` (`python -m tests.bench`): the gateway's speed on this machine, measured in
one run against a bare Falcon passthrough served with the same gunicorn settings and against
the direct upstream.

Modules: `upstream` (fast fake OpenAI server), `passthrough` (the bare passthrough: one Bearer
check and a requests.Session), `load` (raw-socket load generator), `procs` (child processes
and /proc readers), `hot` (in-process hot-path costs), `run` (the phases), `report` (Markdown
table), `profile` (per-request CPU by component, sampled in-process; run on its own with
`make bench-profile` / `python -m tests.bench.profile`). Results go to stdout and to
var/bench.json.
"""
