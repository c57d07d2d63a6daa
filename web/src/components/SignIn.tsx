import { type FormEvent, useId, useState } from "react";
import type { Session } from "../auth/session";

export function SignIn({ session, notice }: { session: Session; notice: string | null }) {
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const id = useId();

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (session.kind === "token" && !token.trim()) {
      setError("Enter the token that `stepwise serve` printed (dev-token by default).");
      return;
    }
    setBusy(true);
    try {
      await session.signIn(token);
    } catch (err) {
      setError(err instanceof Error ? `Sign-in failed: ${err.message}` : "Sign-in failed.");
    } finally {
      setBusy(false);
    }
  }

  return (
    <main id="main" className="page signin">
      <h1>Stepwise</h1>
      <p>Watch, steer and inspect AI builds.</p>
      {notice ? <p role="alert" className="error">{notice}</p> : null}
      <form onSubmit={submit} className="card">
        {session.kind === "token" ? (
          <>
            <label htmlFor={`${id}-token`}>API token</label>
            <input
              id={`${id}-token`}
              type="password"
              autoComplete="off"
              value={token}
              onChange={(e) => setToken(e.target.value)}
              aria-describedby={`${id}-help`}
            />
            <p id={`${id}-help`} className="help">
              Locally, open the address <code>stepwise serve</code> prints (it carries the token), or paste a token from
              <code> STEPWISE_LOCAL_TOKENS</code>.
            </p>
          </>
        ) : (
          <p>You will be sent to the sign-in page of this deployment and back.</p>
        )}
        {error ? <p role="alert" className="error">{error}</p> : null}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
