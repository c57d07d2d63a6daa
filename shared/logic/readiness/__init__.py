"""When a task can start: the plan's graph and its recovery ladder, the pure scheduler, and the steps that
apply them (the dispatch step, the handoff in a parent's completing commit, tasks started while the plan
streams)."""
