// One task in detail: attempts, duration against its estimate, tokens, cost, error, files; retry
// or skip it when it has failed.

import type { BuildState, TaskVM } from "../model/build";
import { DEFAULT_ESTIMATE_S } from "../model/graph";
import { TASK_STATUS_ICON, TASK_STATUS_LABEL, seconds, tokens, usd } from "./format";

export const RETRYABLE = new Set(["failed", "timeout", "skipped"]);
export const SKIPPABLE = new Set(["failed", "timeout"]);

export function canRetry(state: BuildState, t: TaskVM): boolean {
  return RETRYABLE.has(t.status) && !["cancelled", "planning", "awaiting_approval"].includes(state.status);
}

export function canSkip(state: BuildState, t: TaskVM): boolean {
  return SKIPPABLE.has(t.status) && !["cancelled", "planning", "awaiting_approval"].includes(state.status);
}

export function runningMs(t: TaskVM, now: number): number | undefined {
  if (t.durationMs !== undefined && t.status === "completed") return t.durationMs;
  if (t.status === "in_progress" && t.startedAt) return Math.max(0, now - t.startedAt);
  const last = t.attempts[t.attempts.length - 1];
  return last?.durationMs;
}

export interface TaskPanelProps {
  state: BuildState;
  task: TaskVM;
  now: number;
  busy: boolean;
  critical: boolean;
  onRetry: () => void;
  onSkip: () => void;
  onClose: () => void;
  onSelect: (taskId: string) => void;
  onOpenFile: (path: string) => void;
}

export function TaskPanel({ state, task: t, now, busy, critical, onRetry, onSkip, onClose, onSelect, onOpenFile }: TaskPanelProps) {
  const estimateMs = (t.estimatedDuration ?? DEFAULT_ESTIMATE_S) * 1000;
  const tookMs = runningMs(t, now);
  const ratio = tookMs !== undefined ? Math.min(2, tookMs / Math.max(1, estimateMs)) : 0;
  const dependents = state.order.filter((id) => state.tasks[id]?.dependsOn.includes(t.id));
  return (
    <aside className="card task-panel" aria-labelledby="task-panel-title" data-task-id={t.id}>
      <div className="row spread">
        <h2 id="task-panel-title">{t.name}</h2>
        <button type="button" onClick={onClose} aria-label="Close task details">
          ✕
        </button>
      </div>
      <p>
        <span className={`badge status-${t.status}`} data-testid="task-status">
          <span aria-hidden="true">{TASK_STATUS_ICON[t.status]}</span> {TASK_STATUS_LABEL[t.status]}
        </span>
        {t.willRetry ? <span className="muted"> · will retry</span> : null}
        {t.cached ? <span className="muted"> · served from cache</span> : null}
        {critical ? <span className="muted"> · on the critical path</span> : null}
      </p>
      <p className="muted mono">
        {t.id} · {t.type}
        {t.targetPath ? ` · ${t.targetPath}` : ""}
      </p>
      {t.description ? <p>{t.description}</p> : null}
      <dl className="facts">
        <dt>Duration</dt>
        <dd>
          {seconds(tookMs)} of {seconds(estimateMs)} estimated
          <meter min={0} max={2} low={1} high={1.5} optimum={0.5} value={ratio} aria-label="Duration against the estimate" />
        </dd>
        <dt>Tokens</dt>
        <dd>
          {tokens(t.usage?.promptTokens)} prompt + {tokens(t.usage?.completionTokens)} completion
        </dd>
        <dt>Cost</dt>
        <dd>{usd(t.usage?.costUsd)}</dd>
        <dt>Attempts</dt>
        <dd>{t.attempt || "—"}</dd>
      </dl>
      {t.error ? (
        <div className="task-error" role="note" aria-label="Error">
          <strong>Error:</strong> {t.error}
        </div>
      ) : null}
      {t.status === "skipped" && t.skipReason ? (
        <p>
          Skipped{" "}
          {t.skipReason === "dependency_failed" && t.skipDependency
            ? `because “${state.tasks[t.skipDependency]?.name ?? t.skipDependency}” failed`
            : t.skipReason === "user"
              ? "by you"
              : `(${t.skipReason})`}
          .
        </p>
      ) : null}
      {t.attempts.length ? (
        <table className="attempts">
          <caption>Attempts</caption>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Outcome</th>
              <th scope="col">Took</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {t.attempts.map((a) => (
              <tr key={a.n}>
                <td>{a.n}</td>
                <td>{a.outcome}</td>
                <td>{seconds(a.outcome === "running" && a.startedAt ? now - a.startedAt : a.durationMs)}</td>
                <td>{a.error ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {t.dependsOn.length ? (
        <>
          <h3>Needs</h3>
          <ul className="links">
            {t.dependsOn.map((d) => (
              <li key={d}>
                <button type="button" className="link" onClick={() => onSelect(d)}>
                  {state.tasks[d]?.name ?? d}
                </button>
              </li>
            ))}
          </ul>
        </>
      ) : null}
      {dependents.length ? (
        <>
          <h3>Needed by</h3>
          <ul className="links">
            {dependents.map((d) => (
              <li key={d}>
                <button type="button" className="link" onClick={() => onSelect(d)}>
                  {state.tasks[d].name}
                </button>
              </li>
            ))}
          </ul>
        </>
      ) : null}
      {t.files.length ? (
        <>
          <h3>Files</h3>
          <ul className="links">
            {t.files.map((f) => (
              <li key={f}>
                <button type="button" className="link mono" onClick={() => onOpenFile(f)}>
                  {f}
                </button>
              </li>
            ))}
          </ul>
        </>
      ) : null}
      <div className="row">
        {canRetry(state, t) ? (
          <button type="button" className="primary" disabled={busy} onClick={onRetry}>
            Retry task
          </button>
        ) : null}
        {canSkip(state, t) ? (
          <button type="button" disabled={busy} onClick={onSkip}>
            Skip task
          </button>
        ) : null}
      </div>
    </aside>
  );
}
