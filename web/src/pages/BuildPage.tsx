import { type KeyboardEvent, lazy, Suspense, useCallback, useEffect, useMemo, useRef, useState } from "react";
import type { Api, PlanTaskBody } from "../api/client";
import { ApiError } from "../api/client";
import { BUILD_STATUS_LABEL, age, seconds, tokens, usd, when } from "../components/format";
import { Notices } from "../components/Notices";
import { PlanEditor } from "../components/PlanEditor";
import { TaskPanel } from "../components/TaskPanel";
import { TaskTable } from "../components/TaskTable";
import { DagView } from "../graph/DagView";
import { graphInput } from "../graph/layout";
import { useBuild } from "../hooks/useBuild";
import { useNow } from "../hooks/useNow";
import { isTerminal } from "../model/build";

// The file browser (syntax highlighting, zip) loads when its tab is first opened.
const FileBrowser = lazy(() => import("../components/FileBrowser").then((m) => ({ default: m.FileBrowser })));

type Tab = "graph" | "tasks" | "files";
const TABS: { id: Tab; label: string }[] = [
  { id: "graph", label: "Graph" },
  { id: "tasks", label: "Tasks" },
  { id: "files", label: "Files" },
];

const FEED_LABEL = {
  connecting: "Connecting…",
  websocket: "Live (WebSocket)",
  polling: "Live (polling)",
  reconnecting: "Reconnecting…",
  stopped: "Not live",
} as const;

export interface BuildPageProps {
  buildId: string;
  api: Api;
  wsUrl: string | null;
  token: () => Promise<string | null>;
  onUnauthorized: () => void;
}

function markDrawn(count: number): void {
  // Read by the browser tests and the bench: when the DAG of this many tasks was first on screen.
  document.body.dataset.dagDrawn = String(count);
  if (!performance.getEntriesByName(`dag-drawn-${count}`).length) performance.mark(`dag-drawn-${count}`);
}

export function BuildPage({ buildId, api, wsUrl, token, onUnauthorized }: BuildPageProps) {
  const { store, feed, error, planEdited, drawn } = useBuild(api, wsUrl, token, buildId, onUnauthorized);
  const onDrawn = useCallback(
    (count: number) => {
      markDrawn(count);
      drawn();
    },
    [drawn],
  );
  const state = store.view;
  const now = useNow(1000);
  const [tab, setTab] = useState<Tab>("graph");
  const [selected, setSelected] = useState<string | null>(null);
  const [openFile, setOpenFile] = useState<string | null>(null);
  const [editing, setEditing] = useState(false);
  const [busy, setBusy] = useState(false);
  const [said, setSaid] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [confirmCancel, setConfirmCancel] = useState(false);
  const [rejecting, setRejecting] = useState(false);
  const [reason, setReason] = useState("");
  const [dismissed, setDismissed] = useState<Set<number>>(new Set());
  const tabRefs = useRef<Record<Tab, HTMLButtonElement | null>>({ graph: null, tasks: null, files: null });

  const graph = useMemo(() => graphInput(state), [state.order, state.tasks]);
  const terminal = isTerminal(state.status);
  const awaiting = state.status === "awaiting_approval";
  const task = selected ? state.tasks[selected] : undefined;
  const completedCount = useMemo(() => state.order.filter((id) => state.tasks[id]?.status === "completed").length, [state]);

  useEffect(() => {
    if (state.blocked && awaiting) setEditing(true);
  }, [state.blocked, awaiting]);
  useEffect(() => {
    if (!awaiting) setEditing(false);
  }, [awaiting]);

  const act = useCallback(async (what: string, run: () => Promise<unknown>) => {
    setBusy(true);
    setActionError(null);
    setSaid(null);
    try {
      await run();
      setSaid(what);
    } catch (err) {
      setActionError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }, []);

  const approve = (tasks?: PlanTaskBody[]) =>
    act(tasks ? "Edited plan approved: the build starts." : "Plan approved: the build starts.", () =>
      api.approve(buildId, tasks ? { approved: true, tasks } : { approved: true }).then(() => {
        if (tasks)
          planEdited(
            tasks.map((t) => ({
              id: t.id,
              name: t.name,
              type: t.type,
              description: t.description,
              estimatedDuration: t.estimatedDuration,
              dependsOn: t.input?.dependencies ?? [],
            })),
          );
      }),
    );

  const openFileFromTask = (path: string) => {
    setOpenFile(path);
    setTab("files");
  };

  function onTabKey(e: KeyboardEvent<HTMLButtonElement>) {
    const i = TABS.findIndex((t) => t.id === tab);
    let next = i;
    if (e.key === "ArrowRight") next = (i + 1) % TABS.length;
    else if (e.key === "ArrowLeft") next = (i + TABS.length - 1) % TABS.length;
    else if (e.key === "Home") next = 0;
    else if (e.key === "End") next = TABS.length - 1;
    else return;
    e.preventDefault();
    setTab(TABS[next].id);
    tabRefs.current[TABS[next].id]?.focus();
  }

  if (error && !state.prompt)
    return (
      <>
        <h1>Build {buildId}</h1>
        <p role="alert" className="error">
          {error}
        </p>
        <a href="#/">Back to your builds</a>
      </>
    );

  const m = state.metrics;
  const planning = state.status === "planning";
  const total = state.order.length;

  return (
    <div className="build" data-build-status={state.status}>
      <div className="row spread">
        <div>
          <p className="muted">
            <a href="#/">Builds</a> / <span className="mono">{buildId}</span>
          </p>
          <h1 className="prompt">{state.prompt || "Loading build…"}</h1>
        </div>
        <div className="status-box">
          <span className={`badge big build-${state.status}`} data-testid="build-status" aria-live="polite">
            {BUILD_STATUS_LABEL[state.status]}
          </span>
          <span className={`feed feed-${feed.mode}`} title={feed.problem}>
            {FEED_LABEL[feed.mode]}
          </span>
        </div>
      </div>

      <dl className="metrics" aria-label="Build figures">
        <div>
          <dt>Tasks</dt>
          <dd data-testid="task-count">
            {completedCount}/{total} done
            {m.failedTasks ? `, ${m.failedTasks} failed` : ""}
            {m.skippedTasks ? `, ${m.skippedTasks} skipped` : ""}
          </dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd title={when(state.createdAt)}>{age(state.createdAt, now)}</dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd>
            {seconds(terminal ? (m.durationMs ?? (state.end && state.createdAt ? state.end.at - state.createdAt : undefined)) : state.createdAt ? now - state.createdAt : undefined)}
            {state.estimatedDuration ? ` (critical path est. ${seconds(state.estimatedDuration * 1000)})` : ""}
          </dd>
        </div>
        <div>
          <dt>Tokens</dt>
          <dd>
            {tokens(m.promptTokens)} + {tokens(m.completionTokens)}
          </dd>
        </div>
        <div>
          <dt>Cost</dt>
          <dd>
            {usd(m.costUsd)}
            {m.planCostUsd ? ` (plan ${usd(m.planCostUsd)})` : ""}
          </dd>
        </div>
        <div>
          <dt>Plan</dt>
          <dd>
            {state.planVersion ? `version ${state.planVersion}` : "being written"}
            {state.approvedEdited ? " (edited)" : ""}
            {state.runs > 1 ? ` · run ${state.runs}` : ""}
          </dd>
        </div>
      </dl>

      {planning ? (
        <p className="planning" aria-live="polite" data-testid="planning">
          <span className="spinner" aria-hidden="true" /> Planning… {total} task{total === 1 ? "" : "s"} so far
        </p>
      ) : null}

      <Notices
        state={state}
        dismissed={dismissed}
        onDismiss={(seq) => setDismissed((d) => new Set(d).add(seq))}
        onProceed={() => void approve()}
        onEdit={() => setEditing(true)}
      />

      {state.end && state.end.type === "build_failed" ? (
        <p role="alert" className="error">
          The build failed{state.end.reason ? ` (${state.end.reason.replace(/_/g, " ")})` : ""}
          {state.end.message ? `: ${state.end.message}` : "."}
        </p>
      ) : null}
      {state.end && state.end.type === "build_cancelled" ? <p className="muted">Cancelled{state.end.reason ? `: ${state.end.reason}` : ""}.</p> : null}

      {awaiting || !terminal ? (
      <div className="actions row" role="group" aria-label="Build actions">
        {awaiting ? (
          <>
            <button type="button" className="primary" disabled={busy} onClick={() => void approve()}>
              Approve plan
            </button>
            <button type="button" disabled={busy} onClick={() => setEditing(true)} aria-expanded={editing}>
              Edit plan
            </button>
            <button type="button" disabled={busy} onClick={() => setRejecting((r) => !r)} aria-expanded={rejecting}>
              Reject plan
            </button>
          </>
        ) : null}
        {!terminal ? (
          confirmCancel ? (
            <span className="confirm" role="group" aria-label="Confirm cancel">
              Stop this build? No task starts afterwards.
              <button
                type="button"
                className="danger"
                disabled={busy}
                onClick={() => {
                  setConfirmCancel(false);
                  void act("Build cancelled.", () => api.cancel(buildId));
                }}
              >
                Yes, cancel the build
              </button>
              <button type="button" onClick={() => setConfirmCancel(false)}>
                Keep it running
              </button>
            </span>
          ) : (
            <button type="button" className="danger" disabled={busy} onClick={() => setConfirmCancel(true)}>
              Cancel build
            </button>
          )
        ) : null}
      </div>
      ) : null}
      {rejecting && awaiting ? (
        <form
          className="row card"
          onSubmit={(e) => {
            e.preventDefault();
            setRejecting(false);
            void act("Plan rejected.", () => api.approve(buildId, { approved: false, reason: reason.trim() || undefined }));
          }}
        >
          <label htmlFor="reject-reason">Why (optional)</label>
          <input id="reject-reason" value={reason} onChange={(e) => setReason(e.target.value)} />
          <button type="submit" className="danger" disabled={busy}>
            Reject the plan
          </button>
        </form>
      ) : null}
      <div aria-live="polite" className="said">
        {said}
      </div>
      {actionError ? (
        <p role="alert" className="error">
          {actionError}
        </p>
      ) : null}
      {feed.problem && feed.mode !== "websocket" && feed.mode !== "polling" ? (
        <p className={feed.mode === "stopped" ? "error" : "muted"} role={feed.mode === "stopped" ? "alert" : undefined}>
          {feed.problem}
        </p>
      ) : null}

      {editing && awaiting ? (
        <PlanEditor key={`${state.planVersion}-${state.order.length}`} state={state} busy={busy} onApprove={(t) => void approve(t)} onClose={() => setEditing(false)} />
      ) : null}

      <div className="tabs" role="tablist" aria-label="Build views">
        {TABS.map((t) => (
          <button
            key={t.id}
            ref={(el) => {
              tabRefs.current[t.id] = el;
            }}
            type="button"
            role="tab"
            id={`tab-${t.id}`}
            aria-selected={tab === t.id}
            aria-controls={`panel-${t.id}`}
            tabIndex={tab === t.id ? 0 : -1}
            onClick={() => setTab(t.id)}
            onKeyDown={onTabKey}
          >
            {t.label}
            {t.id === "tasks" ? ` (${total})` : ""}
          </button>
        ))}
      </div>
      <div className={`workspace${task && tab !== "files" ? " with-panel" : ""}`}>
        <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} className="tabpanel">
          {tab === "graph" ? (
            total ? (
              <DagView graph={graph} selected={selected} onSelect={setSelected} onDrawn={onDrawn} />
            ) : (
              <p className="muted">{planning ? "The plan's tasks appear here as the AI writes them." : "No tasks."}</p>
            )
          ) : null}
          {tab === "tasks" ? <TaskTable state={state} now={now} critical={graph.critical.nodes} onSelect={setSelected} /> : null}
          {tab === "files" ? (
            <Suspense fallback={<p aria-live="polite">Loading the file browser…</p>}>
              <FileBrowser api={api} buildId={buildId} version={completedCount + state.runs * 10000} open={openFile} onOpen={setOpenFile} />
            </Suspense>
          ) : null}
        </div>
        {task && tab !== "files" ? (
          <TaskPanel
            state={state}
            task={task}
            now={now}
            busy={busy}
            critical={graph.critical.nodes.has(task.id)}
            onClose={() => setSelected(null)}
            onSelect={setSelected}
            onOpenFile={openFileFromTask}
            onRetry={() => void act(`Retrying “${task.name}”.`, () => api.retryTask(buildId, task.id))}
            onSkip={() => void act(`Skipped “${task.name}”.`, () => api.skipTask(buildId, task.id))}
          />
        ) : null}
      </div>
    </div>
  );
}
