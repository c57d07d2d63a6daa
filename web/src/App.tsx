import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import type { Api } from "./api/client";
import type { Session } from "./auth/session";
import { SignIn } from "./components/SignIn";
import type { RuntimeConfig } from "./config";
import { useHashRoute } from "./hooks/useHashRoute";
import { BuildPage } from "./pages/BuildPage";
import { BuildsPage } from "./pages/BuildsPage";

export interface AppProps {
  config: RuntimeConfig;
  session: Session;
  api: Api;
}

export function App({ config, session, api }: AppProps) {
  const signedIn = useSyncExternalStore(
    (cb) => session.onChange(cb),
    () => session.signedIn(),
  );
  const [notice, setNotice] = useState<string | null>(null);
  const route = useHashRoute();
  const token = useCallback(() => session.token(), [session]);
  const unauthorized = useCallback(() => {
    setNotice("Your sign-in was not accepted (missing or expired token). Sign in again.");
    session.rejected();
  }, [session]);

  useEffect(() => {
    document.title = route.page === "build" ? `Build ${route.buildId} · Stepwise` : "Builds · Stepwise";
  }, [route]);

  if (!signedIn) return <SignIn session={session} notice={notice} />;

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <a className="brand" href="#/">
          Stepwise
        </a>
        <nav aria-label="Main">
          <a href="#/" aria-current={route.page === "builds" ? "page" : undefined}>
            Builds
          </a>
        </nav>
        <span className="who">{session.label()}</span>
        <button type="button" className="link" onClick={() => void session.signOut()}>
          Sign out
        </button>
      </header>
      <main id="main" className="page" tabIndex={-1}>
        {route.page === "build" ? (
          <BuildPage key={route.buildId} buildId={route.buildId} api={api} wsUrl={config.wsUrl} token={token} onUnauthorized={unauthorized} />
        ) : (
          <BuildsPage api={api} />
        )}
      </main>
    </>
  );
}
