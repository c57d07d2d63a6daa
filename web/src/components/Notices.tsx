// The plan's warnings and the cycle-recovery copy: a yellow notice when tasks will run one by one,
// the blocked message with its editor, and the red hard error.

import type { BuildState } from "../model/build";

export const COPY = {
  sequentialToast: "⚠ We'll run steps one-by-one; this may take longer.",
  sequential:
    "We couldn't optimize task order, so steps will run one-by-one. Expect a slightly longer build. Proceed?",
  blocked:
    "We hit a planning snag that we couldn't fix automatically. You can tweak the plan or rewrite your prompt.",
  hardError: "Plan couldn't be fixed. Try rephrasing or contact support.",
  whatHappened: "Cycles happen when Task A says it needs Task B, while Task B depends on Task A.",
} as const;

function WhatHappened({ cycles, name }: { cycles: string[]; name: (id: string) => string }) {
  return (
    <details className="what-happened">
      <summary>What happened?</summary>
      <p>{COPY.whatHappened}</p>
      {cycles.length ? (
        <>
          <p>The circles found in this plan:</p>
          <ul>
            {cycles.map((c) => (
              <li key={c}>{c.split(" → ").map(name).join(" → ")}</li>
            ))}
          </ul>
        </>
      ) : null}
    </details>
  );
}

export interface NoticesProps {
  state: BuildState;
  dismissed: Set<number>;
  onDismiss: (seq: number) => void;
  onProceed: () => void;
  onEdit: () => void;
}

export function Notices({ state, dismissed, onDismiss, onProceed, onEdit }: NoticesProps) {
  const name = (id: string) => state.tasks[id]?.name ?? id;
  const awaiting = state.status === "awaiting_approval";
  const shown = state.notices.filter((n) => !dismissed.has(n.seq));
  if (!shown.length && !state.recovery) return null;
  return (
    <div className="notices">
      {shown.map((n) => {
        if (n.kind === "sequential")
          return (
            <div key={n.seq} className="toast warn" role="status" data-notice="sequential">
              <strong>{COPY.sequentialToast}</strong>
              <p>{COPY.sequential}</p>
              <WhatHappened cycles={n.cycles} name={name} />
              <div className="row">
                <button type="button" onClick={() => (awaiting ? onProceed() : onDismiss(n.seq))}>
                  Proceed
                </button>
                {awaiting ? (
                  <button type="button" onClick={onEdit}>
                    Edit plan
                  </button>
                ) : null}
              </div>
            </div>
          );
        if (n.kind === "blocked")
          return state.blocked ? (
            <div key={n.seq} className="toast warn" role="status" data-notice="blocked">
              <strong>{COPY.blocked}</strong>
              {n.message && n.message !== COPY.blocked ? <p>{n.message}</p> : null}
              <WhatHappened cycles={n.cycles} name={name} />
              {awaiting ? (
                <div className="row">
                  <button type="button" className="primary" onClick={onEdit}>
                    Edit plan
                  </button>
                </div>
              ) : null}
            </div>
          ) : null;
        if (n.kind === "hard_error")
          return (
            <div key={n.seq} className="toast error" role="alert" data-notice="hard-error">
              <strong>{COPY.hardError}</strong>
              {n.message && n.message.replace(COPY.hardError, "").trim() ? <p>{n.message.replace(COPY.hardError, "").trim()}</p> : null}
              <WhatHappened cycles={n.cycles} name={name} />
            </div>
          );
        return (
          <div key={n.seq} className="toast warn" role="status" data-notice="warning">
            <p>{n.message}</p>
            <button type="button" className="link" onClick={() => onDismiss(n.seq)}>
              Dismiss
            </button>
          </div>
        );
      })}
      {state.recovery === "auto-priority" || state.recovery === "llm-healed" ? (
        <p className="muted" data-notice="recovered">
          Some task dependencies formed a circle and were untangled automatically ({state.recovery}).
        </p>
      ) : null}
    </div>
  );
}
