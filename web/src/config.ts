// Runtime configuration, read from /config.json next to the app (written at deploy on AWS, served
// by `stepwise serve` locally). Without it the app talks to its own origin with a dev token.

export type AuthConfig =
  | { kind: "token" }
  | {
      kind: "cognito";
      /** OIDC issuer: https://cognito-idp.{region}.amazonaws.com/{userPoolId} */
      authority: string;
      clientId: string;
      /** Hosted UI base URL: https://{prefix}.auth.{region}.amazoncognito.com */
      domain: string;
      scope?: string;
    };

export interface RuntimeConfig {
  /** Base URL of the HTTP API, no trailing slash ("" = this origin). */
  apiUrl: string;
  /** ws:// or wss:// URL of the live events WebSocket, or null to poll. */
  wsUrl: string | null;
  auth: AuthConfig;
}

export function sameOriginConfig(loc: Pick<Location, "protocol" | "host">): RuntimeConfig {
  return {
    apiUrl: "",
    wsUrl: `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`,
    auth: { kind: "token" },
  };
}

export function parseConfig(raw: unknown, loc: Pick<Location, "protocol" | "host">): RuntimeConfig {
  const base = sameOriginConfig(loc);
  if (typeof raw !== "object" || raw === null) return base;
  const r = raw as Record<string, unknown>;
  const apiUrl = typeof r.apiUrl === "string" ? r.apiUrl.replace(/\/+$/, "") : base.apiUrl;
  let wsUrl = base.wsUrl;
  if (r.wsUrl === null || r.wsUrl === "") wsUrl = null;
  else if (typeof r.wsUrl === "string") wsUrl = r.wsUrl.startsWith("/") ? `${base.wsUrl!.replace(/\/ws$/, "")}${r.wsUrl}` : r.wsUrl;
  let auth: AuthConfig = base.auth;
  const a = r.auth as Record<string, unknown> | undefined;
  if (a && a.kind === "cognito" && typeof a.authority === "string" && typeof a.clientId === "string" && typeof a.domain === "string")
    auth = {
      kind: "cognito",
      authority: a.authority,
      clientId: a.clientId,
      domain: a.domain.replace(/\/+$/, ""),
      scope: typeof a.scope === "string" ? a.scope : undefined,
    };
  return { apiUrl, wsUrl, auth };
}

export async function loadConfig(): Promise<RuntimeConfig> {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    if (response.ok) return parseConfig(await response.json(), location);
  } catch {
    // No config file: same origin, dev token.
  }
  return sameOriginConfig(location);
}
