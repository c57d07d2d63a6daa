import { useCallback, useEffect, useState } from "react";
import type { Api, BuildSummary } from "../api/client";
import { ApiError } from "../api/client";
import { BUILD_STATUS_LABEL, age, usd, when } from "../components/format";
import { StartForm } from "../components/StartForm";
import { useNow } from "../hooks/useNow";
import { buildHref } from "../hooks/useHashRoute";
import { TERMINAL_BUILD_STATUSES } from "../model/events";

const PAGE_SIZE = 20;

export function BuildsPage({ api }: { api: Api }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const [builds, setBuilds] = useState<BuildSummary[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const now = useNow(5000);
  const cursor = cursors[cursors.length - 1];

  const load = useCallback(async () => {
    try {
      const page = await api.listBuilds(PAGE_SIZE, cursor);
      setBuilds(page.builds);
      // Read by the bench: when the list was first on screen.
      if (!performance.getEntriesByName("builds-listed").length)
        requestAnimationFrame(() => performance.mark("builds-listed"));
      setNext(page.next ?? null);
      setError(null);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  }, [api, cursor]);

  useEffect(() => {
    void load();
  }, [load]);

  // Keep the first page fresh while something on it is still running.
  const running = builds?.some((b) => !TERMINAL_BUILD_STATUSES.has(b.status)) ?? false;
  useEffect(() => {
    if (cursors.length !== 1 || !running) return;
    const t = setInterval(() => void load(), 5000);
    return () => clearInterval(t);
  }, [cursors.length, running, load]);

  return (
    <>
      <h1>Builds</h1>
      <StartForm api={api} onStarted={(id) => (location.hash = buildHref(id))} />
      <section aria-labelledby="list-title" className="card">
        <div className="row spread">
          <h2 id="list-title">Your builds</h2>
          <button type="button" onClick={() => void load()}>
            Refresh
          </button>
        </div>
        {error ? (
          <p role="alert" className="error">
            {error}
          </p>
        ) : null}
        {builds === null && !error ? <p aria-live="polite">Loading…</p> : null}
        {builds && builds.length === 0 ? <p>No builds yet: start one above.</p> : null}
        {builds && builds.length > 0 ? (
          <table className="builds">
            <caption className="sr-only">Your builds, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Build</th>
                <th scope="col">Status</th>
                <th scope="col">Started</th>
                <th scope="col">Tasks</th>
                <th scope="col">Cost</th>
              </tr>
            </thead>
            <tbody>
              {builds.map((b) => (
                <tr key={b.buildId}>
                  <td>
                    <a href={buildHref(b.buildId)}>{b.prompt || b.buildId}</a>
                    <div className="muted mono">{b.buildId}</div>
                  </td>
                  <td>
                    <span className={`badge build-${b.status}`}>{BUILD_STATUS_LABEL[b.status] ?? b.status}</span>
                  </td>
                  <td>
                    <time dateTime={new Date(b.createdAt).toISOString()} title={when(b.createdAt)}>
                      {age(b.createdAt, now)}
                    </time>
                  </td>
                  <td>
                    {b.metrics?.completedTasks ?? 0}/{b.taskCount ?? b.metrics?.totalTasks ?? "—"}
                  </td>
                  <td>{usd(b.metrics?.costUsd)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : null}
        <nav className="row" aria-label="Pages of builds">
          <button type="button" disabled={cursors.length === 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
            ← Newer
          </button>
          <span className="muted">Page {cursors.length}</span>
          <button type="button" disabled={!next} onClick={() => next && setCursors((c) => [...c, next])}>
            Older →
          </button>
        </nav>
      </section>
    </>
  );
}
