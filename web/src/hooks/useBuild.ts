// One build, live: its snapshot, then its events from the feed, folded into the store in batches,
// one per animation frame at most every MIN_RENDER_INTERVAL_MS (a burst of 1,000 events costs one
// render, not 1,000).

import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import type { Api } from "../api/client";
import { ApiError } from "../api/client";
import type { FeedStatus } from "../live/feed";
import { BuildFeed } from "../live/feed";
import type { AnyEvent, PlannedTask } from "../model/events";
import type { BuildAction, BuildStore } from "../model/store";
import { buildReducer, initialStore } from "../model/store";

// At most ~7 renders a second: over the WebSocket events arrive one by one, and re-drawing a
// 200-task graph for each would cost more frames than it shows.
const MIN_RENDER_INTERVAL_MS = 150;

// The live feed starts at the latest this long after the snapshot arrived (a build with no graph yet).
const FEED_START_LATEST_MS = 300;

const REFRESH_ON = new Set(["build_completed", "build_failed", "build_cancelled", "build_resumed", "plan_approved"]);

export interface LiveBuild {
  store: BuildStore;
  feed: FeedStatus;
  /** Loading the build failed (in words), e.g. not found. */
  error: string | null;
  refresh: () => void;
  /** The API accepted an edited plan: show it. */
  planEdited: (tasks: PlannedTask[]) => void;
  /** The snapshot's graph is on screen: the live feed may start. */
  drawn: () => void;
}

export function useBuild(api: Api, wsUrl: string | null, token: () => Promise<string | null>, buildId: string, onUnauthorized: () => void): LiveBuild {
  const [store, dispatch] = useReducer(buildReducer, buildId, initialStore);
  const [feed, setFeed] = useState<FeedStatus>({ mode: "connecting" });
  const [error, setError] = useState<string | null>(null);
  const queue = useRef<BuildAction[]>([]);
  const frame = useRef<number | null>(null);
  const refreshTimer = useRef<ReturnType<typeof setTimeout> | null>(null);

  const drawnRef = useRef<(() => void) | null>(null);
  const lastFlush = useRef(0);
  const wait = useRef<ReturnType<typeof setTimeout> | null>(null);

  const flush = useCallback(() => {
    frame.current = null;
    lastFlush.current = performance.now();
    const actions = queue.current;
    queue.current = [];
    if (actions.length) dispatch({ type: "batch", actions });
  }, []);

  const push = useCallback(
    (action: BuildAction) => {
      queue.current.push(action);
      if (frame.current !== null || wait.current !== null) return;
      const delay = lastFlush.current + MIN_RENDER_INTERVAL_MS - performance.now();
      if (delay <= 0) frame.current = requestAnimationFrame(flush);
      else
        wait.current = setTimeout(() => {
          wait.current = null;
          frame.current = requestAnimationFrame(flush);
        }, delay);
    },
    [flush],
  );

  const refresh = useCallback(() => {
    if (refreshTimer.current) clearTimeout(refreshTimer.current);
    refreshTimer.current = setTimeout(() => {
      api
        .getBuild(buildId)
        .then((snapshot) => push({ type: "snapshot", snapshot }))
        .catch(() => undefined);
    }, 250);
  }, [api, buildId, push]);

  useEffect(() => {
    dispatch({ type: "reset", buildId });
    setError(null);
    const abort = new AbortController();
    const live = new BuildFeed({
      buildId,
      after: 0,
      api,
      wsUrl,
      token,
      onEvents: (events: AnyEvent[]) => {
        push({ type: "events", events });
        if (events.some((e) => REFRESH_ON.has(e.type) || (e.type === "plan_generated" && (e.data as { truncated?: boolean }).truncated)))
          refresh();
      },
      onCaughtUp: (lastSeq) => push({ type: "caughtUp", lastSeq }),
      onStatus: setFeed,
      onUnauthorized,
    });
    // The snapshot first (a reload draws the build from it at once), then the event log from seq 1:
    // the two requests would only slow each other down. The log's replay (a big build's thousands of
    // events) waits until the snapshot's graph is on screen, or FEED_START_LATEST_MS at most.
    let started = false;
    let latest: ReturnType<typeof setTimeout> | undefined;
    const start = () => {
      if (started || abort.signal.aborted) return;
      started = true;
      drawnRef.current = null;
      clearTimeout(latest);
      live.start();
    };
    api
      .getBuild(buildId, abort.signal)
      .then((snapshot) => {
        performance.mark("snapshot-received");
        push({ type: "snapshot", snapshot });
        drawnRef.current = start;
        latest = setTimeout(start, FEED_START_LATEST_MS);
      })
      .catch((err) => {
        if (abort.signal.aborted) return;
        setError(err instanceof ApiError ? err.message : String(err));
        start();
      });
    const online = () => live.nudge();
    window.addEventListener("online", online);
    return () => {
      abort.abort();
      live.stop();
      window.removeEventListener("online", online);
      if (frame.current !== null) cancelAnimationFrame(frame.current);
      frame.current = null;
      if (wait.current !== null) clearTimeout(wait.current);
      wait.current = null;
      queue.current = [];
      if (refreshTimer.current) clearTimeout(refreshTimer.current);
      clearTimeout(latest);
      drawnRef.current = null;
    };
  }, [api, buildId, wsUrl, token, push, refresh, onUnauthorized]);

  const planEdited = useCallback((tasks: PlannedTask[]) => push({ type: "planEdited", tasks }), [push]);
  const drawn = useCallback(() => drawnRef.current?.(), []);

  return { store, feed, error, refresh, planEdited, drawn };
}
