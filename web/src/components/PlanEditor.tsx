// Edit the plan before approving it: each task's name, description and dependencies. A plan with a
// dependency cycle is refused here, before anything is sent.

import { type FormEvent, useId, useMemo, useRef, useState } from "react";
import type { PlanTaskBody } from "../api/client";
import type { BuildState } from "../model/build";
import { DEFAULT_ESTIMATE_S, describeCycle, findCycles } from "../model/graph";

const DEFAULT_PRIORITY = 5;

export interface DraftTask {
  id: string;
  name: string;
  type: string;
  description: string;
  estimatedDuration?: number;
  targetPath?: string | null;
  priority?: number;
  dependsOn: string[];
}

export function draftFrom(state: BuildState): DraftTask[] {
  return state.order
    .map((id) => state.tasks[id])
    .filter(Boolean)
    .map((t) => ({
      id: t.id,
      name: t.name,
      type: t.type,
      description: t.description,
      estimatedDuration: t.estimatedDuration,
      targetPath: t.targetPath,
      dependsOn: [...t.dependsOn],
    }));
}

/** The approval body's tasks: the plan's task shape, dependencies under `input`. */
export function toPlanTasks(tasks: readonly DraftTask[]): PlanTaskBody[] {
  const ids = new Set(tasks.map((t) => t.id));
  return tasks.map((t) => ({
    id: t.id,
    type: t.type as PlanTaskBody["type"],
    name: t.name,
    description: t.description,
    estimatedDuration: t.estimatedDuration ?? DEFAULT_ESTIMATE_S,
    priority: t.priority ?? DEFAULT_PRIORITY,
    input: {
      ...(t.targetPath ? { targetPath: t.targetPath } : {}),
      dependencies: t.dependsOn.filter((d) => ids.has(d)),
    },
  }));
}

export interface PlanEditorProps {
  state: BuildState;
  busy: boolean;
  onApprove: (tasks: PlanTaskBody[]) => void;
  onClose: () => void;
}

export function PlanEditor({ state, busy, onApprove, onClose }: PlanEditorProps) {
  const id = useId();
  const [tasks, setTasks] = useState<DraftTask[]>(() => draftFrom(state));
  const [current, setCurrent] = useState<string | null>(() => state.blocked?.cycleTasks[0]?.[0] ?? tasks[0]?.id ?? null);
  const [filter, setFilter] = useState("");
  const [refusal, setRefusal] = useState<string | null>(null);
  const refusalRef = useRef<HTMLParagraphElement>(null);

  const cycles = useMemo(() => findCycles(tasks), [tasks]);
  const inCycle = useMemo(() => new Set(cycles.flat()), [cycles]);
  const byId = useMemo(() => new Map(tasks.map((t) => [t.id, t])), [tasks]);
  const name = (tid: string) => byId.get(tid)?.name ?? tid;
  const task = current ? byId.get(current) : undefined;
  const changed = JSON.stringify(tasks) !== JSON.stringify(draftFrom(state));

  function update(tid: string, patch: Partial<DraftTask>) {
    setRefusal(null);
    setTasks((ts) => ts.map((t) => (t.id === tid ? { ...t, ...patch } : t)));
  }

  function toggleDependency(tid: string, dep: string, on: boolean) {
    const t = byId.get(tid)!;
    update(tid, { dependsOn: on ? [...t.dependsOn, dep] : t.dependsOn.filter((d) => d !== dep) });
  }

  function removeTask(tid: string) {
    setRefusal(null);
    setTasks((ts) => ts.filter((t) => t.id !== tid).map((t) => ({ ...t, dependsOn: t.dependsOn.filter((d) => d !== tid) })));
    setCurrent(null);
  }

  function submit(e: FormEvent) {
    e.preventDefault();
    const found = findCycles(tasks);
    if (found.length) {
      setRefusal(
        `Not sent: the plan still has ${found.length === 1 ? "a cycle" : `${found.length} cycles`} — ` +
          found.map((c) => describeCycle(c, name)).join("; ") +
          ". Untick one dependency in each circle.",
      );
      requestAnimationFrame(() => refusalRef.current?.focus());
      return;
    }
    if (tasks.length === 0) {
      setRefusal("Not sent: a plan needs at least one task.");
      return;
    }
    if (tasks.some((t) => !t.name.trim())) {
      setRefusal("Not sent: every task needs a name.");
      return;
    }
    onApprove(toPlanTasks(tasks));
  }

  const others = tasks.filter(
    (t) => t.id !== current && (!filter || `${t.name} ${t.id}`.toLowerCase().includes(filter.toLowerCase())),
  );

  return (
    <section className="card editor" aria-labelledby={`${id}-title`}>
      <div className="row spread">
        <h2 id={`${id}-title`}>Edit the plan</h2>
        <button type="button" onClick={onClose}>
          Close editor
        </button>
      </div>
      {cycles.length ? (
        <div className="toast warn" role="status" data-testid="editor-cycles">
          <strong>
            {cycles.length === 1 ? "1 cycle" : `${cycles.length} cycles`} in this plan — a task cannot wait for itself:
          </strong>
          <ul>
            {cycles.map((c) => (
              <li key={c.join()}>{describeCycle(c, name)}</li>
            ))}
          </ul>
        </div>
      ) : (
        <p className="muted" role="status">
          No cycles: every task can run once the tasks it needs are done.
        </p>
      )}
      <form onSubmit={submit}>
        <div className="editor-panes">
          <nav aria-label="Tasks in the plan" className="editor-list">
            <ul>
              {tasks.map((t) => (
                <li key={t.id}>
                  <button
                    type="button"
                    aria-current={t.id === current ? "true" : undefined}
                    className={inCycle.has(t.id) ? "in-cycle" : undefined}
                    onClick={() => setCurrent(t.id)}
                  >
                    {inCycle.has(t.id) ? <span aria-label="in a cycle">⟳ </span> : null}
                    {t.name}
                    <span className="muted"> · {t.dependsOn.length} deps</span>
                  </button>
                </li>
              ))}
            </ul>
          </nav>
          {task ? (
            <fieldset className="editor-task" key={task.id}>
              <legend>
                Task <code>{task.id}</code>
              </legend>
              <label htmlFor={`${id}-name`}>Name</label>
              <input id={`${id}-name`} value={task.name} onChange={(e) => update(task.id, { name: e.target.value })} />
              <label htmlFor={`${id}-desc`}>Description</label>
              <textarea
                id={`${id}-desc`}
                rows={3}
                value={task.description}
                onChange={(e) => update(task.id, { description: e.target.value })}
              />
              <fieldset>
                <legend>Needs these tasks first</legend>
                <label htmlFor={`${id}-filter`} className="sr-only">
                  Filter tasks
                </label>
                <input
                  id={`${id}-filter`}
                  type="search"
                  placeholder="Filter tasks"
                  value={filter}
                  onChange={(e) => setFilter(e.target.value)}
                />
                <ul className="dep-list">
                  {others.map((o) => {
                    const cid = `${id}-dep-${o.id}`;
                    return (
                      <li key={o.id}>
                        <input
                          id={cid}
                          type="checkbox"
                          data-dep={o.id}
                          checked={task.dependsOn.includes(o.id)}
                          onChange={(e) => toggleDependency(task.id, o.id, e.target.checked)}
                        />
                        <label htmlFor={cid}>
                          {o.name} <span className="muted mono">{o.id}</span>
                        </label>
                      </li>
                    );
                  })}
                </ul>
              </fieldset>
              <button type="button" className="danger" onClick={() => removeTask(task.id)}>
                Remove this task
              </button>
            </fieldset>
          ) : (
            <p>Choose a task to edit.</p>
          )}
        </div>
        {refusal ? (
          <p role="alert" className="error" tabIndex={-1} ref={refusalRef}>
            {refusal}
          </p>
        ) : null}
        <div className="row">
          <button type="submit" className="primary" disabled={busy}>
            {changed ? "Approve the edited plan" : "Approve this plan"}
          </button>
          <button type="button" onClick={() => setTasks(draftFrom(state))} disabled={!changed}>
            Undo my edits
          </button>
        </div>
      </form>
    </section>
  );
}
