// Hash routes (`#/`, `#/builds/{buildId}`), so no page path collides with an API path.

import { useEffect, useState } from "react";

export type Route = { page: "builds" } | { page: "build"; buildId: string };

export function parseHash(hash: string): Route {
  const m = /^#\/builds\/([^/?#]+)/.exec(hash);
  return m ? { page: "build", buildId: decodeURIComponent(m[1]) } : { page: "builds" };
}

export function buildHref(buildId: string): string {
  return `#/builds/${encodeURIComponent(buildId)}`;
}

export function useHashRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}
