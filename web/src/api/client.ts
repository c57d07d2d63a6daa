// The typed HTTP client: every call goes through openapi-fetch over the types generated from the
// API's own /openapi.json (src/api/schema.d.ts), with the bearer token added by one middleware.

import createClient, { type Client } from "openapi-fetch";
import type { AnyEvent } from "../model/events";
import type { Snapshot } from "../model/snapshot";
import { describeError } from "./errors";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type CreateBuildBody = Schemas["CreateBuildRequest"];
export type ApprovalBody = Schemas["ApprovalRequest"];
export type PlanTaskBody = NonNullable<ApprovalBody["tasks"]>[number];
export type FileInfo = Schemas["FileInfo"];

export interface BuildSummary {
  buildId: string;
  status: Snapshot["status"];
  prompt: string;
  createdAt: number;
  updatedAt?: number;
  taskCount?: number | null;
  metrics?: Snapshot["metrics"] | null;
}

export interface BuildPage {
  builds: BuildSummary[];
  next: string | null;
}

export interface EventsPage {
  events: AnyEvent[];
  next: number | string | null;
}

/** An API call that did not succeed, with the words to show the person. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export interface Auth {
  /** The bearer token for the next call, or null when signed out. */
  token(): Promise<string | null>;
  /** Called when the API refuses the token (401): the page asks the person to sign in again. */
  rejected(): void;
}

type Result<T> = { data?: T; error?: unknown; response: Response };

export class Api {
  readonly client: Client<paths>;

  constructor(
    readonly baseUrl: string,
    private readonly auth: Auth,
  ) {
    this.client = createClient<paths>({ baseUrl });
    this.client.use({
      onRequest: async ({ request }) => {
        const token = await auth.token();
        if (token) request.headers.set("Authorization", `Bearer ${token}`);
        return request;
      },
    });
  }

  private async call<T>(run: () => Promise<Result<unknown>>): Promise<T> {
    let result: Result<unknown>;
    try {
      result = await run();
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") throw err;
      throw new ApiError(0, `Could not reach the Stepwise API at ${this.baseUrl || location.origin}. Check your connection, or that the server is running.`);
    }
    if (!result.response.ok) {
      const { message, code, details } = describeError(result.response.status, result.error);
      if (result.response.status === 401) this.auth.rejected();
      throw new ApiError(result.response.status, message, code, details);
    }
    return result.data as T;
  }

  listBuilds(limit: number, cursor?: string | null): Promise<BuildPage> {
    return this.call(() => this.client.GET("/builds", { params: { query: { limit, cursor: cursor ?? undefined } } }));
  }

  createBuild(body: CreateBuildBody, idempotencyKey: string): Promise<{ buildId: string; status: string }> {
    return this.call(() =>
      this.client.POST("/builds", { body, headers: { "Idempotency-Key": idempotencyKey } }),
    );
  }

  getBuild(buildId: string, signal?: AbortSignal): Promise<Snapshot> {
    return this.call(() => this.client.GET("/builds/{buildId}", { params: { path: { buildId } }, signal }));
  }

  /** The event log after `after`; with `wait`, the server holds an empty answer up to that many seconds. */
  getEvents(buildId: string, after: number, limit: number, wait?: number, signal?: AbortSignal): Promise<EventsPage> {
    // `wait` is sent only when asked for, so a server without long-polling never sees it.
    const query = { after, limit, ...(wait ? { wait } : {}) } as { after: number; limit: number };
    return this.call(() =>
      this.client.GET("/builds/{buildId}/events", { params: { path: { buildId }, query }, signal }),
    );
  }

  approve(buildId: string, body: ApprovalBody): Promise<unknown> {
    return this.call(() => this.client.POST("/builds/{buildId}/approval", { params: { path: { buildId } }, body }));
  }

  cancel(buildId: string): Promise<unknown> {
    return this.call(() => this.client.POST("/builds/{buildId}/cancel", { params: { path: { buildId } } }));
  }

  retryTask(buildId: string, taskId: string): Promise<unknown> {
    return this.call(() =>
      this.client.POST("/builds/{buildId}/tasks/{taskId}/retry", { params: { path: { buildId, taskId } } }),
    );
  }

  skipTask(buildId: string, taskId: string): Promise<unknown> {
    return this.call(() =>
      this.client.POST("/builds/{buildId}/tasks/{taskId}/skip" as "/builds/{buildId}/tasks/{taskId}/retry", {
        params: { path: { buildId, taskId } },
      }),
    );
  }

  listFiles(buildId: string): Promise<FileInfo[]> {
    return this.call(() => this.client.GET("/builds/{buildId}/files", { params: { path: { buildId } } }));
  }

  getFile(buildId: string, path: string): Promise<string> {
    return this.call(() =>
      this.client.GET("/builds/{buildId}/files/{path}", { params: { path: { buildId, path } }, parseAs: "text" }),
    );
  }
}
