"""A task's attempts: claim one, call the provider within the time left, store its files, report;
and how attempts run side by side in one invocation.

Every step can be replayed. The claim (`in_progress`, attempt N) commits with `task_started`; the
result commits with `task_completed` / `task_failed` / `task_timeout`; then the dispatcher is told
through the task-finished queue. A redelivered message whose attempt is already settled re-sends
what the settled state implies (the dispatcher and this consumer both ignore duplicates).

`runner.run_task` is the entry. The attempt: `claim.py` (take it, or replay what a lost claim
implies), `attempt.py` (run it: the provider call, the files, the completion), `context.py` (what
it sees), `result_cache.py`, `settle.py` (record a failure, then retry or report),
`build_facts.py` (what a task needs of its build, kept per process). The plumbing: `runner.py`
runs the dependents a completion hands over beside it, within the slots, threads, time limit and
claims gate of `concurrency.py`.
"""
