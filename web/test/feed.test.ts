import { describe, expect, it } from "vitest";
import { ApiError } from "../src/api/client";
import type { EventsPage } from "../src/api/client";
import type { FeedStatus } from "../src/live/feed";
import { BuildFeed } from "../src/live/feed";
import type { AnyEvent } from "../src/model/events";
import { BUILD, happyLog } from "./events";

/** A WebSocket double: the test plays the server. */
class FakeSocket {
  static all: FakeSocket[] = [];
  static refuse = 0;
  readonly OPEN = 1;
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
    queueMicrotask(() => {
      if (FakeSocket.refuse > 0) {
        FakeSocket.refuse--;
        this.onclose?.({ code: 1006 });
        return;
      }
      this.readyState = 1;
      this.onopen?.();
    });
  }
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  push(message: unknown) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

function harness(log: AnyEvent[], opts: { ws?: boolean; wait?: number } = {}) {
  const got: AnyEvent[] = [];
  const caught: number[] = [];
  const statuses: FeedStatus[] = [];
  const polls: { after: number; wait?: number }[] = [];
  let unauthorized = 0;
  const api = {
    getEvents: async (_b: string, after: number, limit: number, wait?: number): Promise<EventsPage> => {
      polls.push({ after, wait });
      if (polls.length > 50) throw new ApiError(404, "stop the test loop");
      return { events: log.filter((e) => e.seq > after).slice(0, limit), next: null };
    },
  };
  FakeSocket.all = [];
  const feed = new BuildFeed({
    buildId: BUILD,
    after: 0,
    api,
    wsUrl: opts.ws === false ? null : "ws://host/ws",
    token: async () => "tok",
    onEvents: (e) => got.push(...e),
    onCaughtUp: (s) => caught.push(s),
    onStatus: (s) => statuses.push(s),
    onUnauthorized: () => unauthorized++,
    webSocket: FakeSocket as unknown as new (url: string) => WebSocket,
    sleep: async () => {
      await tick();
    },
    now: () => 0,
  });
  return { feed, got, caught, statuses, polls, unauthorized: () => unauthorized };
}

describe("live feed over the WebSocket", () => {
  it("subscribes with the token, delivers in order, and says when it has caught up", async () => {
    const log = happyLog();
    const h = harness(log);
    h.feed.start();
    await tick();
    const ws = FakeSocket.all[0];
    expect(new URL(ws.url).searchParams.get("token")).toBe("tok");
    expect(ws.sent[0]).toEqual({ action: "subscribe", buildId: BUILD, after: 0 });
    ws.push({ type: "subscribed", buildId: BUILD, lastSeq: 3 });
    for (const e of log.slice(0, 3)) ws.push(e);
    expect(h.got.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(h.caught).toEqual([3]);
    expect(h.statuses.at(-1)?.mode).toBe("websocket");
    h.feed.stop();
  });

  it("after a drop, resubscribes after the highest seq seen: nothing missed, nothing twice", async () => {
    const log = happyLog();
    const h = harness(log);
    h.feed.start();
    await tick();
    const first = FakeSocket.all[0];
    first.push({ type: "subscribed", buildId: BUILD, lastSeq: 0 });
    for (const e of log.slice(0, 5)) first.push(e);
    first.drop();
    await tick();
    await tick();
    const second = FakeSocket.all[1];
    expect(second.sent[0]).toEqual({ action: "subscribe", buildId: BUILD, after: 5 });
    // A server that resends a little too much: the overlap is dropped.
    second.push({ type: "subscribed", buildId: BUILD, lastSeq: 12 });
    for (const e of log.slice(3)) second.push(e);
    await tick();
    expect(h.got.map((e) => e.seq)).toEqual(log.map((e) => e.seq));
    expect(h.caught.at(-1)).toBe(12);
    expect(h.polls).toEqual([]); // the overlap was no gap: the log was never read
    h.feed.stop();
  });

  it("fills a gap from the event log instead of skipping it", async () => {
    const log = happyLog();
    const h = harness(log);
    h.feed.start();
    await tick();
    const ws = FakeSocket.all[0];
    ws.push(log[0]);
    ws.push(log[4]); // seqs 2-4 lost
    await tick();
    expect(h.polls[0].after).toBe(1);
    expect(h.got.map((e) => e.seq).slice(0, 5)).toEqual([1, 2, 3, 4, 5]);
    h.feed.stop();
  });

  it("falls back to polling when the WebSocket cannot connect", async () => {
    FakeSocket.refuse = 2;
    const log = happyLog();
    const h = harness(log);
    h.feed.start();
    for (let i = 0; i < 6; i++) await tick();
    expect(h.statuses.some((s) => s.mode === "polling")).toBe(true);
    expect(h.got.map((e) => e.seq)).toEqual(log.map((e) => e.seq));
    expect(h.caught).toContain(12);
    h.feed.stop();
    FakeSocket.refuse = 0;
  });

  it("a refused token (close 4401) stops the feed and asks to sign in again", async () => {
    const h = harness(happyLog());
    h.feed.start();
    await tick();
    FakeSocket.all[0].drop(4401);
    expect(h.feed.stopped).toBe(true);
    expect(h.unauthorized()).toBe(1);
    expect(h.statuses.at(-1)?.problem).toMatch(/sign in/i);
  });

  it("an unknown build's error ends the feed with words", async () => {
    const h = harness(happyLog());
    h.feed.start();
    await tick();
    FakeSocket.all[0].push({ type: "error", code: "not_found", buildId: BUILD });
    expect(h.feed.stopped).toBe(true);
    expect(h.statuses.at(-1)?.problem).toMatch(/does not exist/);
  });
});

describe("live feed by polling", () => {
  it("long-polls with wait, pages through, and resumes after the last seq", async () => {
    const log = happyLog();
    const h = harness(log, { ws: false });
    h.feed.start();
    for (let i = 0; i < 4; i++) await tick();
    h.feed.stop();
    expect(h.got.map((e) => e.seq)).toEqual(log.map((e) => e.seq));
    expect(h.polls[0]).toEqual({ after: 0, wait: 20 });
    expect(h.polls[1].after).toBe(12);
    expect(h.caught[0]).toBe(12);
  });

  it("stops on 404 with the API's words", async () => {
    const h = harness([], { ws: false });
    const api = (h.feed as unknown as { o: { api: { getEvents: () => Promise<never> } } }).o.api;
    api.getEvents = async () => {
      throw new ApiError(404, "Not found: it does not exist, or it belongs to another user.");
    };
    h.feed.start();
    await tick();
    await tick();
    expect(h.feed.stopped).toBe(true);
    expect(h.statuses.at(-1)?.problem).toMatch(/Not found/);
  });
});

describe("live feed: the server's own stops", () => {
  it("resubscribes after the highest seq when the server stops the subscription", async () => {
    const log = happyLog();
    const h = harness(log);
    h.feed.start();
    await tick();
    const ws = FakeSocket.all[0];
    ws.push({ type: "subscribed", buildId: BUILD, lastSeq: 12 });
    for (const e of log.slice(0, 4)) ws.push(e);
    ws.push({ type: "error", code: "subscription_stopped", buildId: BUILD, message: "subscribe again" });
    expect(ws.sent.at(-1)).toEqual({ action: "subscribe", buildId: BUILD, after: 4 });
    h.feed.stop();
  });

  it("reads an event too large for a frame from the event log", async () => {
    const log = happyLog();
    const h = harness(log);
    h.feed.start();
    await tick();
    const ws = FakeSocket.all[0];
    for (const e of log.slice(0, 11)) ws.push(e);
    ws.push({ type: "error", code: "too_large", buildId: BUILD, seq: 12, message: "read it" });
    await tick();
    expect(h.polls[0].after).toBe(11);
    expect(h.got.at(-1)?.seq).toBe(12);
    h.feed.stop();
  });
});
