// Every task in a table: the list a keyboard or screen-reader user reads instead of the canvas.

import type { BuildState } from "../model/build";
import { TASK_STATUS_ICON, TASK_STATUS_LABEL, seconds, tokens, usd } from "./format";
import { runningMs } from "./TaskPanel";

export function TaskTable({ state, now, critical, onSelect }: { state: BuildState; now: number; critical: Set<string>; onSelect: (id: string) => void }) {
  if (!state.order.length) return <p>No tasks yet.</p>;
  return (
    <table className="tasks">
      <caption className="sr-only">Tasks of this build</caption>
      <thead>
        <tr>
          <th scope="col">Task</th>
          <th scope="col">Status</th>
          <th scope="col">Attempts</th>
          <th scope="col">Duration / estimate</th>
          <th scope="col">Tokens</th>
          <th scope="col">Cost</th>
          <th scope="col">Needs</th>
        </tr>
      </thead>
      <tbody>
        {state.order.map((id) => {
          const t = state.tasks[id];
          if (!t) return null;
          return (
            <tr key={id} data-task-id={id} data-status={t.status}>
              <th scope="row">
                <button type="button" className="link" onClick={() => onSelect(id)}>
                  {t.name}
                </button>
                {critical.has(id) ? <span className="muted"> ★ critical</span> : null}
              </th>
              <td>
                <span className={`badge status-${t.status}`}>
                  <span aria-hidden="true">{TASK_STATUS_ICON[t.status]}</span> {TASK_STATUS_LABEL[t.status]}
                </span>
                {t.error ? <div className="muted clip" title={t.error}>{t.error}</div> : null}
              </td>
              <td>{t.attempt || "—"}</td>
              <td>
                {seconds(runningMs(t, now))} / {seconds((t.estimatedDuration ?? 10) * 1000)}
              </td>
              <td>{t.usage ? tokens(t.usage.promptTokens + t.usage.completionTokens) : "—"}</td>
              <td>{usd(t.usage?.costUsd)}</td>
              <td className="muted">{t.dependsOn.map((d) => state.tasks[d]?.name ?? d).join(", ") || "—"}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
