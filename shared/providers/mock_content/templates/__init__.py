"""The mock's file templates, one file each, read once per process with `importlib.resources`.

`%%name%%` marks where `render._fill` puts a value; everything else is the file as the mock writes
it. `<family>.css` is appended to `base.css` for that prompt family (landing, dashboard, form, blog,
todo, generic).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def template(name: str) -> str:
    """The text of template `name` (e.g. `base.css`, `form.vue`)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
