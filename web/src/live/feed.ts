// A build's events, live: over the WebSocket when there is one (subscribe with the highest seq
// seen, resubscribe with it after every reconnect), else by polling GET /events?after= (long-polled
// with `wait`). Either way the page gets each event once, in seq order, with no gap: the feed keeps
// the highest contiguous seq it delivered, drops anything at or below it, holds anything beyond a
// gap and fills the gap from the event log.

import type { Api } from "../api/client";
import { ApiError } from "../api/client";
import type { AnyEvent } from "../model/events";
import { isEnvelope } from "../model/events";

export type FeedMode = "connecting" | "websocket" | "polling" | "reconnecting" | "stopped";

export interface FeedStatus {
  mode: FeedMode;
  /** Why the feed stopped or is retrying, in words. */
  problem?: string;
}

export interface FeedOptions {
  buildId: string;
  /** Events at or below this seq are already folded. */
  after: number;
  api: Pick<Api, "getEvents">;
  /** ws:// or wss:// URL of the events WebSocket; null to poll only. */
  wsUrl: string | null;
  token: () => Promise<string | null>;
  onEvents: (events: AnyEvent[]) => void;
  /** Everything recorded when the feed (re)connected has been delivered. */
  onCaughtUp: (lastSeq: number) => void;
  onStatus: (status: FeedStatus) => void;
  /** The token was refused (401 / close code 4401). */
  onUnauthorized?: () => void;
  webSocket?: new (url: string) => WebSocket;
  /** Seconds a poll may be held by the server (0 turns long-polling off). */
  waitSeconds?: number;
  pageSize?: number;
  pingMs?: number;
  /** Delays, injectable for tests. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  now?: () => number;
}

const PAGE = 1000;
const PING_MS = 60_000; // the server may drop a connection idle for 10 minutes
const MAX_BACKOFF_MS = 10_000;
const WS_FAILURES_BEFORE_POLLING = 2;

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

export class BuildFeed {
  private last: number;
  private readonly ahead = new Map<number, AnyEvent>();
  private readonly stopper = new AbortController();
  private ws: WebSocket | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private wsFailures = 0;
  private backoff = 500;
  private subscribedLastSeq: number | null = null;
  private filling = false;
  private mode: FeedMode = "connecting";
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly now: () => number;

  constructor(private readonly o: FeedOptions) {
    this.last = o.after;
    this.sleep = o.sleep ?? defaultSleep;
    this.now = o.now ?? (() => Date.now());
  }

  /** The highest seq delivered with nothing missing below it. */
  get lastSeq(): number {
    return this.last;
  }

  get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  start(): void {
    const Impl = this.o.webSocket ?? (typeof WebSocket !== "undefined" ? WebSocket : undefined);
    if (this.o.wsUrl && Impl) void this.connect(Impl);
    else void this.poll();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopper.abort();
    this.clearPing();
    this.ws?.close(1000, "page left");
    this.ws = null;
    this.setStatus({ mode: "stopped" });
  }

  /** Reconnect now (the browser came back online, or the page became visible). */
  nudge(): void {
    if (this.mode === "reconnecting") this.backoff = 0;
  }

  private setStatus(status: FeedStatus): void {
    this.mode = status.mode;
    this.o.onStatus(status);
  }

  /** Deliver what extends the contiguous prefix; hold the rest; fill any gap from the log. */
  private accept(events: readonly AnyEvent[]): void {
    for (const e of events) {
      if (e.buildId !== this.o.buildId || e.seq <= this.last || this.ahead.has(e.seq)) continue;
      this.ahead.set(e.seq, e);
    }
    const out: AnyEvent[] = [];
    let next = this.ahead.get(this.last + 1);
    while (next) {
      this.ahead.delete(next.seq);
      out.push(next);
      this.last = next.seq;
      next = this.ahead.get(this.last + 1);
    }
    if (out.length) this.o.onEvents(out);
    if (this.subscribedLastSeq !== null && this.last >= this.subscribedLastSeq) {
      this.subscribedLastSeq = null;
      this.o.onCaughtUp(this.last);
    }
    if (this.ahead.size && !this.filling) void this.fillGap();
  }

  private async fillGap(once = false): Promise<void> {
    this.filling = true;
    try {
      while ((once || this.ahead.size) && !this.stopped) {
        once = false;
        const before = this.last;
        const page = await this.o.api.getEvents(this.o.buildId, this.last, this.o.pageSize ?? PAGE, 0, this.stopper.signal);
        this.accept(page.events);
        if (this.last === before) break; // the log has nothing new yet; the held events stay held
      }
    } catch {
      // The next message or reconnect tries again.
    } finally {
      this.filling = false;
    }
  }

  // --- WebSocket ------------------------------------------------------------------------------

  private async connect(Impl: new (url: string) => WebSocket): Promise<void> {
    if (this.stopped) return;
    const token = await this.o.token();
    const url = new URL(this.o.wsUrl!);
    if (token) url.searchParams.set("token", token);
    let opened = false;
    let ws: WebSocket;
    try {
      ws = new Impl(url.toString());
    } catch {
      this.wsFailed(Impl, opened);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.wsFailures = 0;
      this.backoff = 500;
      ws.send(JSON.stringify({ action: "subscribe", buildId: this.o.buildId, after: this.last }));
      this.clearPing();
      this.pingTimer = setInterval(() => {
        if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ action: "ping" }));
      }, this.o.pingMs ?? PING_MS);
    };
    ws.onmessage = (message: MessageEvent) => {
      let data: unknown;
      try {
        data = JSON.parse(String(message.data));
      } catch {
        return;
      }
      if (isEnvelope(data)) {
        this.accept([data]);
        return;
      }
      const m = data as { type?: string; buildId?: string; lastSeq?: number; code?: string; seq?: number };
      if (m.type === "subscribed" && m.buildId === this.o.buildId) {
        this.setStatus({ mode: "websocket" });
        this.subscribedLastSeq = m.lastSeq ?? 0;
        this.accept([]);
      } else if (m.type === "error" && m.code === "not_found") {
        this.stop();
        this.setStatus({ mode: "stopped", problem: "This build does not exist, or it belongs to another user." });
      } else if (m.type === "error" && (m.code === "subscription_stopped" || m.code === "internal_error")) {
        // The server stopped this subscription: take it up again after the highest seq delivered.
        ws.send(JSON.stringify({ action: "subscribe", buildId: this.o.buildId, after: this.last }));
      } else if (m.type === "error" && m.code === "too_large") {
        // One event too large for a WebSocket message: read it from the event log.
        if (!this.filling) void this.fillGap(true);
      }
    };
    ws.onclose = (event: CloseEvent) => {
      if (this.ws === ws) this.ws = null;
      this.clearPing();
      if (this.stopped) return;
      if (event.code === 4401) {
        this.stop();
        this.setStatus({ mode: "stopped", problem: "The live connection refused your sign-in. Sign in again." });
        this.o.onUnauthorized?.();
        return;
      }
      this.wsFailed(Impl, opened);
    };
    ws.onerror = () => {
      // onclose follows and decides.
    };
  }

  private wsFailed(Impl: new (url: string) => WebSocket, opened: boolean): void {
    if (!opened) this.wsFailures++;
    if (this.wsFailures >= WS_FAILURES_BEFORE_POLLING) {
      void this.poll();
      return;
    }
    this.setStatus({ mode: "reconnecting", problem: "The live connection dropped; reconnecting…" });
    const delay = this.backoff * (0.75 + Math.random() * 0.5);
    this.backoff = Math.min(MAX_BACKOFF_MS, Math.max(500, this.backoff * 2));
    void this.sleep(delay, this.stopper.signal).then(() => this.connect(Impl));
  }

  private clearPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  // --- polling --------------------------------------------------------------------------------

  private async poll(): Promise<void> {
    const page = this.o.pageSize ?? PAGE;
    const wait = this.o.waitSeconds ?? 20;
    let backoff = 500;
    this.setStatus({ mode: "polling" });
    while (!this.stopped) {
      const started = this.now();
      try {
        const answer = await this.o.api.getEvents(this.o.buildId, this.last, page, wait, this.stopper.signal);
        if (this.stopped) return;
        if (this.mode !== "polling") this.setStatus({ mode: "polling" });
        backoff = 500;
        this.accept(answer.events);
        if (answer.events.length < page) this.o.onCaughtUp(this.last);
        if (answer.events.length === 0 && this.now() - started < 1000) {
          // The server answered at once: it does not hold polls, so wait here instead.
          await this.sleep(1000, this.stopper.signal);
        }
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && (err.status === 401 || err.status === 404)) {
          this.stop();
          this.setStatus({ mode: "stopped", problem: err.message });
          if (err.status === 401) this.o.onUnauthorized?.();
          return;
        }
        const why = err instanceof Error ? err.message : "the event log could not be read";
        this.setStatus({ mode: "reconnecting", problem: `${why} Retrying…` });
        await this.sleep(backoff, this.stopper.signal);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
      }
    }
  }
}
