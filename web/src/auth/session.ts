// Who the dashboard calls the API as. Locally: a bearer token from STEPWISE_LOCAL_TOKENS, handed
// over in the address (`/?token=…`, as `stepwise serve` prints it) and then dropped from it. On
// AWS: Cognito's hosted UI, authorization code with PKCE (oidc-client-ts), the ID token as bearer.

import type { Auth } from "../api/client";
import type { AuthConfig } from "../config";

export interface Session extends Auth {
  readonly kind: "token" | "cognito";
  signedIn(): boolean;
  /** Who is signed in, in words (for the header). */
  label(): string;
  signIn(token?: string): Promise<void>;
  signOut(): Promise<void>;
  /** Subscribe to sign-in changes (e.g. a 401); returns the unsubscribe. */
  onChange(listener: () => void): () => void;
}

const TOKEN_KEY = "stepwise.token";

abstract class BaseSession {
  private listeners = new Set<() => void>();
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  protected changed(): void {
    for (const l of this.listeners) l();
  }
}

/** `?token=` in the address signs in and is removed from the address bar (and from history). */
export function takeTokenFromAddress(loc: Location, hist: History, storage: Storage): string | null {
  const url = new URL(loc.href);
  const token = url.searchParams.get("token");
  if (token === null) return null;
  url.searchParams.delete("token");
  hist.replaceState(hist.state, "", `${url.pathname}${url.search}${url.hash}`);
  if (token.trim()) storage.setItem(TOKEN_KEY, token.trim());
  return token.trim() || null;
}

export class TokenSession extends BaseSession implements Session {
  readonly kind = "token" as const;
  constructor(private readonly storage: Storage) {
    super();
  }
  signedIn(): boolean {
    return Boolean(this.storage.getItem(TOKEN_KEY));
  }
  label(): string {
    return "signed in with a token";
  }
  async token(): Promise<string | null> {
    return this.storage.getItem(TOKEN_KEY);
  }
  async signIn(token?: string): Promise<void> {
    if (token?.trim()) this.storage.setItem(TOKEN_KEY, token.trim());
    this.changed();
  }
  async signOut(): Promise<void> {
    this.storage.removeItem(TOKEN_KEY);
    this.changed();
  }
  rejected(): void {
    void this.signOut();
  }
}

type UserManagerT = import("oidc-client-ts").UserManager;
type UserT = import("oidc-client-ts").User;

export class CognitoSession extends BaseSession implements Session {
  readonly kind = "cognito" as const;
  private user: UserT | null = null;

  private constructor(
    private readonly manager: UserManagerT,
    private readonly config: Extract<AuthConfig, { kind: "cognito" }>,
  ) {
    super();
    manager.events.addUserLoaded((u) => {
      this.user = u;
      this.changed();
    });
    manager.events.addUserUnloaded(() => {
      this.user = null;
      this.changed();
    });
  }

  static async create(config: Extract<AuthConfig, { kind: "cognito" }>): Promise<CognitoSession> {
    // Loaded only on AWS, so the local bundle does not carry the OIDC client.
    const { UserManager, WebStorageStateStore } = await import("oidc-client-ts");
    const redirect = `${location.origin}/`;
    const manager = new UserManager({
      authority: config.authority,
      client_id: config.clientId,
      redirect_uri: redirect,
      post_logout_redirect_uri: redirect,
      response_type: "code", // authorization code; oidc-client-ts always adds PKCE (S256)
      scope: config.scope ?? "openid email profile",
      automaticSilentRenew: true, // with the refresh token Cognito returns
      userStore: new WebStorageStateStore({ store: sessionStorage }),
      metadataSeed: {
        end_session_endpoint: `${config.domain}/logout?client_id=${encodeURIComponent(config.clientId)}&logout_uri=${encodeURIComponent(redirect)}`,
      },
    });
    const session = new CognitoSession(manager, config);
    const url = new URL(location.href);
    if (url.searchParams.has("code") && url.searchParams.has("state")) {
      session.user = await manager.signinRedirectCallback();
      // Back on the page the person was on when they signed in (signIn keeps its hash as the state).
      const back = typeof session.user.state === "string" && session.user.state.startsWith("#/") ? session.user.state : url.hash;
      history.replaceState(history.state, "", `${url.pathname}${back}`);
    } else {
      session.user = await manager.getUser();
    }
    return session;
  }

  signedIn(): boolean {
    return Boolean(this.user && !this.user.expired);
  }
  label(): string {
    const p = this.user?.profile;
    return p?.email ? `signed in as ${p.email}` : "signed in";
  }
  async token(): Promise<string | null> {
    if (this.user?.expired) {
      try {
        this.user = await this.manager.signinSilent();
      } catch {
        this.user = null;
        this.changed();
      }
    }
    return this.user?.id_token ?? null;
  }
  async signIn(): Promise<void> {
    await this.manager.signinRedirect({ state: location.hash });
  }
  async signOut(): Promise<void> {
    await this.manager.removeUser();
    await this.manager.signoutRedirect().catch(() => undefined);
  }
  rejected(): void {
    void this.manager.removeUser();
  }
  get domain(): string {
    return this.config.domain;
  }
}

export async function createSession(auth: AuthConfig): Promise<Session> {
  if (auth.kind === "cognito") return CognitoSession.create(auth);
  takeTokenFromAddress(location, history, localStorage);
  return new TokenSession(localStorage);
}
