"""The dashboard's API types are what the API serves: the committed document and the types
openapi-typescript makes of it must match GET /openapi.json of a running `stepwise serve`.
Regenerate both with `python scripts/gen_api_types.py`."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import httpx
import pytest

from tests.browser.conftest import ROOT, Server

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

FIX = "run `python scripts/gen_api_types.py` (needs `npm ci` in web/) and commit web/src/api/"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_types", ROOT / "scripts" / "gen_api_types.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_api_types_are_generated_from_the_served_document(server: Server) -> None:
    gen = _generator()
    served = httpx.get(f"{server.base}/openapi.json").json()
    assert gen.document_text(served) == gen.DOCUMENT.read_text(), f"web/src/api/openapi.json is stale: {FIX}"
    assert gen.types_for(served) == gen.TYPES.read_text(), f"web/src/api/schema.d.ts is stale: {FIX}"
    assert json.loads(gen.DOCUMENT.read_text())["paths"], "the document lists the routes"
