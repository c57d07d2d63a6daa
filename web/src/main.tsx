import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Api } from "./api/client";
import { App } from "./App";
import { createSession } from "./auth/session";
import { loadConfig } from "./config";
import "./styles.css";

async function boot(): Promise<void> {
  const root = createRoot(document.getElementById("root")!);
  try {
    const config = await loadConfig();
    performance.mark("config-loaded");
    const session = await createSession(config.auth);
    const api = new Api(config.apiUrl, session);
    root.render(
      <StrictMode>
        <App config={config} session={session} api={api} />
      </StrictMode>,
    );
  } catch (err) {
    root.render(
      <main className="page">
        <h1>Stepwise</h1>
        <p role="alert">The dashboard could not start: {err instanceof Error ? err.message : String(err)}</p>
      </main>,
    );
  }
}

void boot();
