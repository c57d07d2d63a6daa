import { describe, expect, it } from "vitest";
import { describeError } from "../src/api/errors";
import { takeTokenFromAddress } from "../src/auth/session";
import { parseConfig } from "../src/config";

class MemoryStorage {
  data = new Map<string, string>();
  getItem(k: string) {
    return this.data.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.data.set(k, v);
  }
  removeItem(k: string) {
    this.data.delete(k);
  }
}

describe("sign-in from the address", () => {
  it("keeps ?token= and drops it from the address bar, keeping the route", () => {
    const storage = new MemoryStorage();
    const calls: string[] = [];
    const history = { state: null, replaceState: (_s: unknown, _t: string, url: string) => calls.push(url) };
    const token = takeTokenFromAddress(
      { href: "http://127.0.0.1:8000/?token=dev-token&x=1#/builds/bld_1" } as Location,
      history as unknown as History,
      storage as unknown as Storage,
    );
    expect(token).toBe("dev-token");
    expect(storage.getItem("stepwise.token")).toBe("dev-token");
    expect(calls).toEqual(["/?x=1#/builds/bld_1"]);
  });

  it("does nothing without a token in the address", () => {
    const calls: string[] = [];
    const out = takeTokenFromAddress(
      { href: "http://h/#/" } as Location,
      { replaceState: (_s: unknown, _t: string, u: string) => calls.push(u) } as unknown as History,
      new MemoryStorage() as unknown as Storage,
    );
    expect(out).toBeNull();
    expect(calls).toEqual([]);
  });
});

describe("runtime config", () => {
  const loc = { protocol: "https:", host: "d123.cloudfront.net" };
  it("defaults to this origin, its /ws and a token", () => {
    expect(parseConfig(null, loc)).toEqual({ apiUrl: "", wsUrl: "wss://d123.cloudfront.net/ws", auth: { kind: "token" } });
  });
  it("reads the deployed config: API and WebSocket URLs, Cognito ids", () => {
    const c = parseConfig(
      {
        apiUrl: "https://abc.execute-api.eu-west-1.amazonaws.com/v1/",
        wsUrl: "wss://ws.execute-api.eu-west-1.amazonaws.com/live",
        auth: { kind: "cognito", authority: "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_X", clientId: "cid", domain: "https://x.auth.eu-west-1.amazoncognito.com/" },
      },
      loc,
    );
    expect(c.apiUrl).toBe("https://abc.execute-api.eu-west-1.amazonaws.com/v1");
    expect(c.wsUrl).toBe("wss://ws.execute-api.eu-west-1.amazonaws.com/live");
    expect(c.auth).toMatchObject({ kind: "cognito", clientId: "cid", domain: "https://x.auth.eu-west-1.amazoncognito.com" });
  });
  it("a relative wsUrl is on this origin; null turns the WebSocket off", () => {
    expect(parseConfig({ wsUrl: "/ws" }, { protocol: "http:", host: "127.0.0.1:8000" }).wsUrl).toBe("ws://127.0.0.1:8000/ws");
    expect(parseConfig({ wsUrl: null }, loc).wsUrl).toBeNull();
  });
});

describe("errors in words", () => {
  it("names the invalid fields of a 422", () => {
    const d = describeError(422, { error: { code: "invalid_request", message: "Invalid field(s): prompt", details: [{ field: "prompt", message: "String should have at least 1 character" }] } });
    expect(d.message).toContain("prompt: String should have at least 1 character");
  });
  it("explains 401, 404, 409 and 5xx", () => {
    expect(describeError(401, null).message).toMatch(/sign in again/i);
    expect(describeError(404, { error: { message: "No such route." } }).message).toMatch(/does not exist, or it belongs to another user/);
    expect(describeError(409, { error: { message: "build is completed, not awaiting approval" } }).message).toMatch(/not awaiting approval/);
    expect(describeError(503, null).message).toMatch(/server failed \(503\)/);
  });
});
