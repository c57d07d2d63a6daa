"""How the mock renders a prompt into a plan and files (the package's docstring says what it does).

Templates that are whole files live in `templates/` and are filled by `_fill`; components are built
from the markup tree below and rendered per framework.
"""

from __future__ import annotations

import hashlib
import html
import json
import posixpath
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from shared.models.plan import TaskType
from shared.providers.base import GeneratedFile
from shared.providers.mock_content.templates import template

EXCERPT_CHARS = 200
SUBJECT_WORDS = 6
SUBJECT_CHARS = 60
DEFAULT_SUBJECT = "your project"
MAX_PLAN_TASKS = 8

# --------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Printable text on one line: control/format/surrogate characters become spaces, runs collapse."""
    chars = [" " if unicodedata.category(ch).startswith("C") else ch for ch in text]
    return " ".join("".join(chars).split())


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    cleaned = clean_text(text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


_LEAD_RE = re.compile(
    r"^(?:please\s+)?(?:(?:can|could|would)\s+you\s+)?(?:(?:i|we)\s+(?:want|need)\s+(?:to\s+)?)?"
    r"(?:create|build|make|generate|design|write|develop|code|scaffold|implement|set\s*up|give\s+me|add)"
    r"\b\s*(?:me\s+|us\s+)?",
    re.IGNORECASE,
)
_STOP_RE = re.compile(
    r"\s+(?:with|that|which|who|whose|using|including|featuring|containing|showing|displaying|listing"
    r"|tracking|allowing|letting|where|so|to|and)\b|[,.;:!?()\[\]{}\"<>]",
    re.IGNORECASE,
)
_FOR_RE = re.compile(r"\b(?:for|about)\s+", re.IGNORECASE)
_ARTICLE_RE = re.compile(
    r"^(?:(?:a|an|the|my|our|your|simple|basic|small|modern|new|clean|beautiful|responsive)\s+)+",
    re.IGNORECASE,
)


def extract_subject(prompt: str) -> str:
    """What the prompt is about: "Create a landing page for Bean There" -> "Bean There"."""
    rest = _LEAD_RE.sub("", clean_text(prompt), count=1)
    head = _STOP_RE.split(rest, maxsplit=1)[0]
    parts = _FOR_RE.split(head, maxsplit=1)
    if len(parts) == 2 and parts[1].strip():
        head = parts[1]
    head = _ARTICLE_RE.sub("", head.strip())
    subject = " ".join(head.split()[:SUBJECT_WORDS])[:SUBJECT_CHARS].strip()
    return subject or DEFAULT_SUBJECT


def title_case(text: str) -> str:
    words = text.split()
    return " ".join(w if any(c.isupper() for c in w) else w[:1].upper() + w[1:] for w in words)


def _ascii_words(text: str) -> list[str]:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.findall(r"[A-Za-z0-9]+", ascii_text)


def slugify(text: str, fallback: str = "stepwise-app", limit: int = 40) -> str:
    slug = "-".join(w.lower() for w in _ascii_words(text))[:limit].strip("-")
    return slug or fallback


def pascal_case(text: str, fallback: str = "Main", limit: int = 40) -> str:
    name = "".join(w[:1].upper() + w[1:] for w in _ascii_words(text))[:limit]
    if not name or not name[0].isalpha():
        name = fallback + name
    return name[:limit]


_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_LINE_WIDTH = 100


def _ts_key(key: str) -> str:
    return key if _IDENTIFIER.match(key) else json.dumps(key, ensure_ascii=False)


def _ts_flat(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{_ts_key(k)}: {_ts_flat(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_ts_flat(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def js(value: Any, level: int = 0) -> str:
    """A TypeScript literal of JSON data, laid out like Prettier would (unquoted keys, trailing commas)."""
    flat = _ts_flat(value)
    if len(flat) + 2 * level <= _LINE_WIDTH or not isinstance(value, dict | list) or not value:
        return flat
    pad, end = "  " * (level + 1), "  " * level
    if isinstance(value, dict):
        items = [f"{pad}{_ts_key(k)}: {js(v, level + 1)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{end}}}"
    items = [f"{pad}{js(v, level + 1)}," for v in value]
    return "[\n" + "\n".join(items) + f"\n{end}]"


def _fill(text: str, **values: str) -> str:
    """Single-pass `%%name%%` substitution (values are never re-scanned)."""
    return re.sub(r"%%(\w+)%%", lambda m: values[m.group(1)], text)


def _comment_safe(text: str) -> str:
    return clean_text(text).replace("*/", "* /").replace("--", "- -")


def _digest(seed: str) -> bytes:
    return hashlib.sha256(seed.encode("utf-8", "replace")).digest()


# --------------------------------------------------------------------------------------------------
# Frameworks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Framework:
    key: str
    label: str
    ext: str  # component file extension
    import_suffix: str  # what a component import adds to the module name
    entry: str  # the entry module
    mount_id: str
    plugin_import: str
    plugin_call: str
    dependencies: tuple[tuple[str, str], ...]
    dev_dependencies: tuple[tuple[str, str], ...]
    check_command: str

    @property
    def app_path(self) -> str:
        return f"src/App{self.ext}"


_COMMON_DEV = (("typescript", "~5.6.3"), ("vite", "^6.0.5"))

FRAMEWORKS: dict[str, Framework] = {
    "react": Framework(
        key="react", label="React", ext=".tsx", import_suffix="", entry="src/main.tsx", mount_id="root",
        plugin_import='import react from "@vitejs/plugin-react";', plugin_call="react()",
        dependencies=(("react", "^18.3.1"), ("react-dom", "^18.3.1")),
        dev_dependencies=(("@types/react", "^18.3.12"), ("@types/react-dom", "^18.3.1"),
                          ("@vitejs/plugin-react", "^4.3.4"), *_COMMON_DEV),
        check_command="tsc --noEmit",
    ),
    "vue": Framework(
        key="vue", label="Vue", ext=".vue", import_suffix=".vue", entry="src/main.ts", mount_id="app",
        plugin_import='import vue from "@vitejs/plugin-vue";', plugin_call="vue()",
        dependencies=(("vue", "^3.5.13"),),
        dev_dependencies=(("@vitejs/plugin-vue", "^5.2.1"), ("vue-tsc", "^2.1.10"), *_COMMON_DEV),
        check_command="vue-tsc --noEmit",
    ),
    "svelte": Framework(
        key="svelte", label="Svelte", ext=".svelte", import_suffix=".svelte", entry="src/main.ts",
        mount_id="app",
        plugin_import='import { svelte } from "@sveltejs/vite-plugin-svelte";', plugin_call="svelte()",
        dependencies=(),
        dev_dependencies=(("@sveltejs/vite-plugin-svelte", "^5.0.3"), ("svelte", "^5.15.0"),
                          ("svelte-check", "^4.1.1"), *_COMMON_DEV),
        check_command="svelte-check",
    ),
}

_FRAMEWORK_ALIASES = {"nuxt": "vue", "sveltekit": "svelte", "next": "react", "preact": "react"}


def resolve_framework(name: str | None) -> Framework:
    """`react` unless the name mentions vue or svelte (e.g. "Vue 3", "sveltekit")."""
    words = re.findall(r"[a-z]+", (name or "").lower())
    for word in words:
        key = _FRAMEWORK_ALIASES.get(word, word)
        if key in FRAMEWORKS:
            return FRAMEWORKS[key]
    return FRAMEWORKS["react"]


# --------------------------------------------------------------------------------------------------
# Markup: one description, three renderings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Txt:
    text: str


@dataclass(frozen=True)
class Expr:
    code: str  # a TypeScript expression using single-quoted strings only


@dataclass(frozen=True)
class Comp:
    name: str
    props: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class El:
    tag: str
    children: tuple[Node, ...] = ()
    attrs: tuple[tuple[str, str], ...] = ()
    binds: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Each:
    items: str
    var: str
    key: str
    body: El | Comp


Node = Txt | Expr | Comp | El | Each


def el(tag: str, *children: Node, a: dict[str, str] | None = None, b: dict[str, str] | None = None) -> El:
    return El(tag, tuple(children), tuple((a or {}).items()), tuple((b or {}).items()))


_VOID = frozenset({"input", "img", "br", "hr", "meta", "link"})
_JSX_ATTR = {"class": "className", "for": "htmlFor", "novalidate": "noValidate",
             "tabindex": "tabIndex", "autocomplete": "autoComplete"}


def _escape_text(text: str) -> str:
    return html.escape(text, quote=False).replace("{", "&#123;").replace("}", "&#125;")


def _escape_attr(value: str) -> str:
    return html.escape(value, quote=True).replace("{", "&#123;").replace("}", "&#125;")


class _Dialect:
    """How one framework spells interpolation, bound attributes and loops."""

    def expr(self, code: str) -> str:
        return "{" + code + "}"

    def static(self, name: str, value: str) -> str:
        return f' {name}="{_escape_attr(value)}"'

    def bound(self, name: str, code: str) -> str:
        return f" {name}={{{code}}}"

    def loop_attrs(self, loop: Each) -> str:
        return ""

    def each(self, node: Each, depth: int) -> list[str]:
        raise NotImplementedError

    def attrs(self, node: El | Comp, loop: Each | None) -> str:
        parts = [self.loop_attrs(loop)] if loop else []
        if isinstance(node, El):
            parts += [self.static(k, v) for k, v in node.attrs]
            parts += [self.bound(k, v) for k, v in node.binds]
        else:
            parts += [self.bound(k, v) for k, v in node.props]
        return "".join(parts)


class _Jsx(_Dialect):
    def static(self, name: str, value: str) -> str:
        return super().static(_JSX_ATTR.get(name, name), value)

    def bound(self, name: str, code: str) -> str:
        return super().bound(_JSX_ATTR.get(name, name), code)

    def loop_attrs(self, loop: Each) -> str:
        return f" key={{{loop.key}}}"

    def each(self, node: Each, depth: int) -> list[str]:
        pad = "  " * depth
        body = render_markup(node.body, self, depth + 1, loop=node)
        return [f"{pad}{{{node.items}.map(({node.var}) => (", *body, f"{pad}))}}"]


class _Vue(_Dialect):
    def expr(self, code: str) -> str:
        return "{{ " + code + " }}"

    def bound(self, name: str, code: str) -> str:
        if '"' in code:
            raise ValueError(f"Vue binding {name!r} must not contain double quotes: {code}")
        return f' :{name}="{code}"'

    def loop_attrs(self, loop: Each) -> str:
        return f' v-for="{loop.var} in {loop.items}" :key="{loop.key}"'

    def each(self, node: Each, depth: int) -> list[str]:
        return render_markup(node.body, self, depth, loop=node)


class _Svelte(_Dialect):
    def each(self, node: Each, depth: int) -> list[str]:
        pad = "  " * depth
        body = render_markup(node.body, self, depth + 1)
        return [f"{pad}{{#each {node.items} as {node.var} ({node.key})}}", *body, f"{pad}{{/each}}"]


_DIALECTS: dict[str, _Dialect] = {"react": _Jsx(), "vue": _Vue(), "svelte": _Svelte()}


def _inline(node: Txt | Expr, dialect: _Dialect) -> str:
    return _escape_text(node.text) if isinstance(node, Txt) else dialect.expr(node.code)


def render_markup(node: Node, dialect: _Dialect, depth: int, loop: Each | None = None) -> list[str]:
    """Lines of markup for `node`, indented two spaces per level."""
    pad = "  " * depth
    if isinstance(node, Txt | Expr):
        return [pad + _inline(node, dialect)]
    if isinstance(node, Each):
        return dialect.each(node, depth)
    if isinstance(node, Comp):
        return [f"{pad}<{node.name}{dialect.attrs(node, loop)} />"]
    opening = f"<{node.tag}{dialect.attrs(node, loop)}"
    if not node.children:
        return [pad + opening + (" />" if node.tag in _VOID else f"></{node.tag}>")]
    if all(isinstance(child, Txt | Expr) for child in node.children):
        inner = "".join(_inline(child, dialect) for child in node.children)  # type: ignore[arg-type]
        return [f"{pad}{opening}>{inner}</{node.tag}>"]
    lines = [pad + opening + ">"]
    for child in node.children:
        lines += render_markup(child, dialect, depth + 1)
    return [*lines, f"{pad}</{node.tag}>"]


def used_components(node: Node) -> list[str]:
    """Component names used in the markup, in order of first use."""
    found: list[str] = []
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Comp) and current.name not in found:
            found.append(current.name)
        elif isinstance(current, El):
            stack.extend(reversed(current.children))
        elif isinstance(current, Each):
            stack.append(current.body)
    return found


@dataclass(frozen=True)
class View:
    """A component: markup plus the module-level constants, imports and props it uses."""

    markup: Node
    consts: tuple[tuple[str, Any], ...] = ()
    imports: tuple[str, ...] = ()
    props: tuple[tuple[str, str], ...] = ()


def _script_lines(view: View, fw: Framework, at_root: bool) -> tuple[list[str], list[str]]:
    prefix = "./components/" if at_root else "./"
    imports = [f'import {name} from "{prefix}{name}{fw.import_suffix}";'
               for name in used_components(view.markup)]
    imports += list(view.imports)
    consts = [f"const {name} = {js(value)};" for name, value in view.consts]
    return imports, consts


def _render_react(view: View, name: str, imports: list[str], consts: list[str]) -> str:
    names = ", ".join(p for p, _ in view.props)
    types = "; ".join(f"{p}: {t}" for p, t in view.props)
    params = f"{{ {names} }}: {{ {types} }}" if view.props else ""
    head = [block for block in ("\n".join(imports), "\n\n".join(consts)) if block]
    body = render_markup(view.markup, _DIALECTS["react"], 2)
    function = [f"export default function {name}({params}) {{", "  return (", *body, "  );", "}"]
    return "\n\n".join([*head, "\n".join(function)]) + "\n"


def _render_vue(view: View, imports: list[str], consts: list[str]) -> str:
    props = [f"defineProps<{{ {'; '.join(f'{p}: {t}' for p, t in view.props)} }}>();"] if view.props else []
    script_blocks = [b for b in ("\n".join(imports), "\n".join(props), "\n\n".join(consts)) if b]
    template = render_markup(view.markup, _DIALECTS["vue"], 1)
    parts = []
    if script_blocks:
        parts.append('<script setup lang="ts">\n' + "\n\n".join(script_blocks) + "\n</script>")
    parts.append("<template>\n" + "\n".join(template) + "\n</template>")
    return "\n\n".join(parts) + "\n"


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def _render_svelte(view: View, imports: list[str], consts: list[str]) -> str:
    props = [f"export let {p}: {t};" for p, t in view.props]
    script_blocks = [b for b in ("\n".join(imports), "\n".join(props), "\n\n".join(consts)) if b]
    markup = "\n".join(render_markup(view.markup, _DIALECTS["svelte"], 0))
    if not script_blocks:
        return markup + "\n"
    script = '<script lang="ts">\n' + _indent("\n\n".join(script_blocks)) + "\n</script>"
    return script + "\n\n" + markup + "\n"


def render_view(view: View, name: str, fw: Framework, at_root: bool = False) -> str:
    """The component's source file for `fw`."""
    imports, consts = _script_lines(view, fw, at_root)
    if fw.key == "vue":
        return _render_vue(view, imports, consts)
    if fw.key == "svelte":
        return _render_svelte(view, imports, consts)
    return _render_react(view, name, imports, consts)


# --------------------------------------------------------------------------------------------------
# What the prompt asks for
# --------------------------------------------------------------------------------------------------

_FAMILY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (family, re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE))
    for family, pattern in (
        ("landing", r"landing|hero|home\s*page|marketing|web\s*site|product\s+page|launch\s+page|portfolio"),
        ("dashboard", r"dashboards?|admin|analytics|metrics|kpis?|charts?|reporting"),
        ("form", r"forms?|sign\s*-?\s*up|signups?|register|registration|log\s*-?\s*in|sign\s*-?\s*in"
                 r"|contact|survey"),
        ("blog", r"blogs?|articles?|posts|news|journal|magazine"),
        ("todo", r"todos?|to-dos?|to\s+do\s+(?:list|app)|task\s+list|checklist"),
    )
)

_LANDING_SECTIONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (section, re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE))
    for section, pattern in (
        ("features", r"features?|benefits?"),
        ("pricing", r"pricing|prices?|plans|tiers"),
        ("testimonials", r"testimonials?|reviews?|quotes|social\s+proof"),
        ("faq", r"faqs?|questions"),
    )
)


def _earliest(text: str, patterns: Sequence[tuple[str, re.Pattern[str]]]) -> list[str]:
    """Names whose pattern occurs in `text`, ordered by first occurrence (ties: listed order)."""
    hits = [(m.start(), index, name) for index, (name, pattern) in enumerate(patterns)
            if (m := pattern.search(text))]
    return [name for _, _, name in sorted(hits)]


def detect_family(prompt: str) -> str:
    found = _earliest(prompt, _FAMILY_PATTERNS)
    return found[0] if found else "generic"


def _form_variant(prompt: str) -> str:
    if re.search(r"\b(?:log\s*-?\s*in|sign\s*-?\s*in)\b", prompt, re.IGNORECASE):
        return "login"
    if re.search(r"\b(?:contact|feedback|enquiry|inquiry|message)\b", prompt, re.IGNORECASE):
        return "contact"
    return "signup"


_PALETTE = ("#4f46e5", "#0ea5e9", "#16a34a", "#db2777", "#ea580c", "#7c3aed")


@dataclass(frozen=True)
class AppSpec:
    """Everything the templates need, read off the prompt once."""

    prompt: str
    excerpt: str
    subject: str
    title: str
    slug: str
    accent: str
    framework: Framework
    family: str
    sections: tuple[str, ...] = ()  # landing page middle sections
    variant: str = ""  # form variant

    def seed(self, salt: str) -> bytes:
        return _digest(f"{salt}:{self.subject.lower()}")


@lru_cache(maxsize=128)
def build_spec(prompt: str, framework: str | None = None) -> AppSpec:
    cleaned = clean_text(prompt)
    subject = extract_subject(cleaned)
    family = detect_family(cleaned)
    sections = tuple(_earliest(cleaned, _LANDING_SECTIONS)[:2]) or ("features",)
    return AppSpec(
        prompt=cleaned,
        excerpt=excerpt(cleaned) or f"A small app for {subject}",
        subject=subject,
        title=title_case(subject),
        slug=slugify(subject),
        accent=_PALETTE[_digest(subject.lower())[0] % len(_PALETTE)],
        framework=resolve_framework(framework),
        family=family,
        sections=sections if family == "landing" else (),
        variant=_form_variant(cleaned) if family == "form" else "",
    )


# --------------------------------------------------------------------------------------------------
# Project files: package.json, tooling, install notes, entry, index.html, styles
# --------------------------------------------------------------------------------------------------


def package_json(spec: AppSpec) -> str:
    fw = spec.framework
    manifest = {
        "name": spec.slug,
        "private": True,
        "version": "0.1.0",
        "description": spec.excerpt,
        "type": "module",
        "scripts": {"dev": "vite", "build": f"{fw.check_command} && vite build",
                    "check": fw.check_command, "preview": "vite preview"},
        "dependencies": dict(fw.dependencies),
        "devDependencies": dict(sorted(fw.dev_dependencies)),
    }
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def vite_config(spec: AppSpec) -> str:
    fw = spec.framework
    return (
        'import { defineConfig } from "vite";\n'
        f"{fw.plugin_import}\n\n"
        "// https://vite.dev/config/\n"
        "export default defineConfig({\n"
        f"  plugins: [{fw.plugin_call}],\n"
        "  server: { port: 5173 },\n"
        "});\n"
    )


def tsconfig_json(spec: AppSpec) -> str:
    options: dict[str, Any] = {
        "target": "ES2020",
        "useDefineForClassFields": True,
        "lib": ["ES2020", "DOM", "DOM.Iterable"],
        "module": "ESNext",
        "moduleResolution": "bundler",
        "skipLibCheck": True,
        "isolatedModules": True,
        "moduleDetection": "force",
        "noEmit": True,
        "strict": True,
        "noUnusedLocals": True,
        "noUnusedParameters": True,
        "noFallthroughCasesInSwitch": True,
    }
    if spec.framework.key == "react":
        options["jsx"] = "react-jsx"
    if spec.framework.key == "svelte":
        options["verbatimModuleSyntax"] = True
    include = ["src/**/*.ts", "src/**/*.tsx", "src/**/*.vue", "src/**/*.svelte"]
    return json.dumps({"compilerOptions": options, "include": include}, indent=2) + "\n"


def env_declarations(spec: AppSpec) -> str:
    text = '/// <reference types="vite/client" />\n'
    if spec.framework.key == "vue":
        text += (
            '\ndeclare module "*.vue" {\n'
            '  import type { DefineComponent } from "vue";\n'
            "  const component: DefineComponent<object, object, unknown>;\n"
            "  export default component;\n"
            "}\n"
        )
    return text


def svelte_config(spec: AppSpec) -> str:
    return (
        'import { vitePreprocess } from "@sveltejs/vite-plugin-svelte";\n\n'
        "export default {\n  preprocess: vitePreprocess(),\n};\n"
    )


def tooling_files(spec: AppSpec) -> list[GeneratedFile]:
    files = [
        GeneratedFile("vite.config.ts", vite_config(spec)),
        GeneratedFile("tsconfig.json", tsconfig_json(spec)),
        GeneratedFile("src/vite-env.d.ts", env_declarations(spec)),
    ]
    if spec.framework.key == "svelte":
        files.append(GeneratedFile("svelte.config.js", svelte_config(spec)))
    return files


def npmrc(spec: AppSpec) -> str:
    return "engine-strict=true\nsave-exact=false\nfund=false\naudit-level=high\n"


def install_files(spec: AppSpec) -> list[GeneratedFile]:
    return [GeneratedFile(".npmrc", npmrc(spec)), GeneratedFile(".nvmrc", "20\n")]


def entry_module(spec: AppSpec) -> str:
    fw = spec.framework
    if fw.key == "vue":
        return ('import { createApp } from "vue";\nimport App from "./App.vue";\n\n'
                'createApp(App).mount("#app");\n')
    if fw.key == "svelte":
        return (
            'import { mount } from "svelte";\nimport App from "./App.svelte";\n\n'
            'const app = mount(App, { target: document.getElementById("app")! });\n\n'
            "export default app;\n"
        )
    return (
        'import { StrictMode } from "react";\n'
        'import { createRoot } from "react-dom/client";\n'
        'import App from "./App";\n\n'
        'createRoot(document.getElementById("root")!).render(\n'
        "  <StrictMode>\n    <App />\n  </StrictMode>,\n);\n"
    )


def index_html(spec: AppSpec) -> str:
    fw = spec.framework
    return (
        "<!doctype html>\n"
        '<html lang="en">\n'
        "  <head>\n"
        '    <meta charset="UTF-8" />\n'
        '    <meta name="viewport" content="width=device-width, initial-scale=1.0" />\n'
        f'    <meta name="description" content="{html.escape(spec.excerpt)}" />\n'
        f"    <title>{html.escape(spec.title)}</title>\n"
        "  </head>\n"
        "  <body>\n"
        f'    <div id="{fw.mount_id}"></div>\n'
        f'    <script type="module" src="/{fw.entry}"></script>\n'
        "  </body>\n"
        "</html>\n"
    )


def styles_css(spec: AppSpec) -> str:
    base = _fill(template("base.css"), title=_comment_safe(spec.title), accent=spec.accent)
    return base + template(f"{spec.family}.css")


# --------------------------------------------------------------------------------------------------
# Landing page views
# --------------------------------------------------------------------------------------------------

_SECTION_COMPONENT = {"features": "Features", "pricing": "Pricing", "testimonials": "Testimonials",
                      "faq": "Faq"}


def hero_view(spec: AppSpec) -> View:
    first = spec.sections[0] if spec.sections else "features"
    markup = el(
        "section",
        el("div",
           el("p", Txt("Introducing"), a={"class": "eyebrow"}),
           el("h1", Expr("headline")),
           el("p", Expr("tagline"), a={"class": "tagline"}),
           el("div",
              el("a", Expr("cta"), a={"class": "button primary", "href": "#cta"}),
              el("a", Txt("Learn more"), a={"class": "button ghost", "href": f"#{first}"}),
              a={"class": "hero-actions"}),
           a={"class": "container"}),
        a={"class": "hero", "id": "top"},
    )
    consts = (("headline", spec.title),
              ("tagline", f"{spec.title}: simple to start, built to grow, ready to launch."),
              ("cta", "Get started"))
    return View(markup, consts)


def _section(section_id: str, heading: Node, *content: Node) -> El:
    return el("section", el("div", el("h2", heading), *content, a={"class": "container"}),
              a={"class": f"section {section_id}", "id": section_id})


def features_view(spec: AppSpec) -> View:
    features = [
        {"title": "Fast by default", "text": f"{spec.title} loads in a blink on every device."},
        {"title": "Made to fit", "text": "Every section adapts to phones, tablets and wide screens."},
        {"title": "Ready to grow", "text": "Typed, modular components that are easy to extend."},
    ]
    card = el("li", el("h3", Expr("feature.title")), el("p", Expr("feature.text")),
              a={"class": "feature-card"})
    markup = _section("features", Expr("heading"),
                      el("ul", Each("features", "feature", "feature.title", card), a={"class": "card-grid"}))
    return View(markup, (("heading", f"Why people choose {spec.title}"), ("features", features)))


def pricing_view(spec: AppSpec) -> View:
    plans = [
        {"name": "Starter", "price": "$0", "perks": ["1 project", "Community support"]},
        {"name": "Pro", "price": "$19", "perks": ["Unlimited projects", "Priority support", "Analytics"]},
        {"name": "Team", "price": "$49", "perks": ["Everything in Pro", "5 seats", "SSO"]},
    ]
    perk = el("li", Expr("perk"))
    card = el("li",
              el("h3", Expr("plan.name")),
              el("p", Expr("plan.price"), Txt(" / month"), a={"class": "price"}),
              el("ul", Each("plan.perks", "perk", "perk", perk)),
              el("a", Txt("Choose "), Expr("plan.name"), a={"class": "button primary", "href": "#cta"}),
              a={"class": "plan-card"})
    markup = _section("pricing", Expr("heading"),
                      el("ul", Each("plans", "plan", "plan.name", card), a={"class": "card-grid"}))
    return View(markup, (("heading", f"{spec.title} pricing"), ("plans", plans)))


def testimonials_view(spec: AppSpec) -> View:
    quotes = [
        {"quote": f"{spec.title} made our launch effortless.", "author": "Priya N.", "role": "Founder"},
        {"quote": "Clear, fast and a joy to use every day.", "author": "Marcus L.", "role": "Designer"},
        {"quote": "We shipped in a week instead of a month.", "author": "Ana R.", "role": "Engineer"},
    ]
    card = el("li",
              el("figure",
                 el("blockquote", el("p", Expr("item.quote"))),
                 el("figcaption", Expr("item.author"), Txt(", "), Expr("item.role"))),
              a={"class": "quote-card"})
    markup = _section("testimonials", Txt("What people say"),
                      el("ul", Each("quotes", "item", "item.author", card), a={"class": "card-grid"}))
    return View(markup, (("quotes", quotes),))


def faq_view(spec: AppSpec) -> View:
    faqs = [
        {"question": f"What is {spec.title}?", "answer": spec.excerpt},
        {"question": "Is there a free plan?", "answer": "Yes: start free and upgrade when you need more."},
        {"question": "Can I cancel any time?", "answer": "Of course. There are no long-term contracts."},
    ]
    item = el("details", el("summary", Expr("faq.question")), el("p", Expr("faq.answer")))
    markup = _section("faq", Txt("Frequently asked questions"), Each("faqs", "faq", "faq.question", item))
    return View(markup, (("faqs", faqs),))


def footer_view(spec: AppSpec) -> View:
    first = spec.sections[0] if spec.sections else "features"
    links = [{"label": _SECTION_COMPONENT.get(first, "Features"), "href": f"#{first}"},
             {"label": "Get started", "href": "#cta"}, {"label": "Back to top", "href": "#top"}]
    link = el("a", Expr("link.label"), b={"href": "link.href"})
    markup = el(
        "footer",
        el("section",
           el("h2", Expr("ctaHeadline")),
           el("p", Txt("Join today. It takes less than a minute.")),
           el("a", Expr("ctaLabel"), a={"class": "button primary", "href": "#top"}),
           a={"class": "cta", "id": "cta"}),
        el("nav", Each("links", "link", "link.href", link),
           a={"class": "footer-links", "aria-label": "Footer"}),
        el("p", Txt("© "), Expr("owner"), a={"class": "copyright"}),
        a={"class": "site-footer"},
    )
    consts = (("ctaHeadline", f"Ready to try {spec.title}?"), ("ctaLabel", "Get started free"),
              ("links", links), ("owner", spec.title))
    return View(markup, consts)


_SECTION_VIEWS: dict[str, Callable[[AppSpec], View]] = {
    "features": features_view, "pricing": pricing_view, "testimonials": testimonials_view, "faq": faq_view,
}
# --------------------------------------------------------------------------------------------------
# Dashboard views
# --------------------------------------------------------------------------------------------------


def metrics_module(spec: AppSpec) -> str:
    n = spec.seed("metrics")
    stats = [
        {"label": "Active users", "value": f"{1200 + n[0] * 37:,}", "change": n[1] % 25 - 8},
        {"label": "Revenue", "value": f"${5000 + n[2] * 250:,}", "change": n[3] % 25 - 8},
        {"label": "Conversion", "value": f"{1.5 + (n[4] % 50) / 10:.1f}%", "change": n[5] % 25 - 8},
        {"label": "Open tickets", "value": str(n[6] % 90 + 5), "change": n[7] % 25 - 8},
    ]
    weekly = [{"label": f"W{i + 1}", "value": 20 + byte % 80} for i, byte in enumerate(n[8:16])]
    return (
        "export interface Stat {\n  label: string;\n  value: string;\n  change: number;\n}\n\n"
        "export interface Point {\n  label: string;\n  value: number;\n}\n\n"
        f"export const stats: Stat[] = {js(stats)};\n\n"
        f"export const weekly: Point[] = {js(weekly)};\n\n"
        "export const weeklyMax = Math.max(...weekly.map((point) => point.value));\n"
    )


def sidebar_view(spec: AppSpec) -> View:
    links = [{"label": label, "href": f"#{slugify(label)}"}
             for label in ("Overview", "Reports", "Customers", "Settings")]
    link = el("li", el("a", Expr("link.label"), b={"href": "link.href"}))
    markup = el("aside",
                el("div", Expr("brand"), a={"class": "brand"}),
                el("nav", el("ul", Each("links", "link", "link.href", link)), a={"aria-label": "Main"}),
                a={"class": "sidebar"})
    return View(markup, (("brand", spec.title), ("links", links)))


def stats_view(spec: AppSpec) -> View:
    card = el("article",
              el("p", Expr("stat.label"), a={"class": "stat-label"}),
              el("p", Expr("stat.value"), a={"class": "stat-value"}),
              el("p", Expr("stat.change >= 0 ? '+' : ''"), Expr("stat.change"), Txt("% vs last week"),
                 b={"class": "stat.change >= 0 ? 'stat-change up' : 'stat-change down'"}),
              a={"class": "stat-card"})
    markup = el("section", Each("stats", "stat", "stat.label", card),
                a={"class": "stats", "aria-label": "Key metrics"})
    return View(markup, imports=('import { stats } from "../data/metrics";',))


def chart_view(spec: AppSpec) -> View:
    row = el("li",
             el("span", Expr("point.label"), a={"class": "bar-label"}),
             el("progress", b={"value": "point.value", "max": "weeklyMax", "aria-label": "point.label"}),
             el("span", Expr("point.value"), a={"class": "bar-value"}),
             a={"class": "bar-row"})
    markup = el("section",
                el("h2", Txt("Weekly activity")),
                el("ul", Each("weekly", "point", "point.label", row), a={"class": "bars"}),
                a={"class": "card chart-panel"})
    return View(markup, imports=('import { weekly, weeklyMax } from "../data/metrics";',))


# --------------------------------------------------------------------------------------------------
# Form: a validation module plus one interactive component per framework
# --------------------------------------------------------------------------------------------------

_FORM_FIELDS = {
    "signup": [("name", "Full name", "text", "name"), ("email", "Email", "email", "email"),
               ("password", "Password", "password", "new-password")],
    "login": [("email", "Email", "email", "email"), ("password", "Password", "password", "current-password")],
    "contact": [("name", "Your name", "text", "name"), ("email", "Email", "email", "email"),
                ("message", "Message", "textarea", "off")],
}
_FORM_COPY = {
    "signup": ("SignupForm", "Create your {title} account", "Create account"),
    "login": ("LoginForm", "Sign in to {title}", "Sign in"),
    "contact": ("ContactForm", "Contact {title}", "Send message"),
}

def validation_module(spec: AppSpec) -> str:
    fields = [{"name": name, "label": label, "type": kind, "autocomplete": auto, "required": True}
              for name, label, kind, auto in _FORM_FIELDS[spec.variant or "signup"]]
    return _fill(template("form-validation.ts"), fields=js(fields))


_FORM_SOURCES = {"react": "form.tsx", "vue": "form.vue", "svelte": "form.svelte"}


def form_component_name(spec: AppSpec) -> str:
    return _FORM_COPY[spec.variant or "signup"][0]


def form_source(spec: AppSpec) -> str:
    name, heading, submit = _FORM_COPY[spec.variant or "signup"]
    return _fill(template(_FORM_SOURCES[spec.framework.key]), name=name,
                 heading=json.dumps(heading.format(title=spec.title), ensure_ascii=False),
                 submit=json.dumps(submit))


# --------------------------------------------------------------------------------------------------
# Blog views
# --------------------------------------------------------------------------------------------------


def posts_module(spec: AppSpec) -> str:
    posts = [
        {"slug": "getting-started", "title": f"Getting started with {spec.title}",
         "excerpt": f"Why we built {spec.subject}, and how to make the most of it.",
         "date": "2024-05-02", "minutes": 4},
        {"slug": "lessons-learned", "title": f"Five lessons from building {spec.title}",
         "excerpt": "What worked, what did not, and what we would do again.", "date": "2024-05-16",
         "minutes": 7},
        {"slug": "whats-next", "title": f"What's next for {spec.title}",
         "excerpt": "A look at the roadmap for the coming months.", "date": "2024-06-03", "minutes": 3},
    ]
    return (
        "export interface Post {\n  slug: string;\n  title: string;\n  excerpt: string;\n"
        "  date: string;\n  minutes: number;\n}\n\n"
        f"export const posts: Post[] = {js(posts)};\n"
    )


def post_card_view(spec: AppSpec) -> View:
    markup = el("article",
                el("p", Expr("post.date"), Txt(" · "), Expr("post.minutes"), Txt(" min read"),
                   a={"class": "post-meta"}),
                el("h2", el("a", Expr("post.title"), b={"href": "'#' + post.slug"})),
                el("p", Expr("post.excerpt")),
                a={"class": "post-card"})
    return View(markup, imports=('import type { Post } from "../data/posts";',), props=(("post", "Post"),))


def post_list_view(spec: AppSpec) -> View:
    markup = el("section",
                el("h2", Txt("Latest posts")),
                Each("posts", "post", "post.slug", Comp("PostCard", (("post", "post"),))),
                a={"class": "container post-list"})
    return View(markup, imports=('import { posts } from "../data/posts";',))


# --------------------------------------------------------------------------------------------------
# Todo: a pure helper module plus one interactive component per framework
# --------------------------------------------------------------------------------------------------

def todos_module(spec: AppSpec) -> str:
    texts = [f"Plan {spec.subject}", f"Build the first version of {spec.subject}", "Share it with a friend"]
    todos = [{"id": i + 1, "text": text, "done": i == 0} for i, text in enumerate(texts)]
    return _fill(template("todos.ts"), todos=js(todos))


_TODO_SOURCES = {"react": "todo.tsx", "vue": "todo.vue", "svelte": "todo.svelte"}


def todo_source(spec: AppSpec) -> str:
    heading = json.dumps(f"Today's tasks for {spec.title}", ensure_ascii=False)
    return _fill(template(_TODO_SOURCES[spec.framework.key]), heading=heading)


# --------------------------------------------------------------------------------------------------
# Generic fallback view
# --------------------------------------------------------------------------------------------------

_STOPWORDS = frozenset(re.findall(r"\w+", (
    "a an and app application are build but can create for from give have into just make me my new "
    "of on or our please simple some that the their them then there these this those to using want "
    "what when which with would write your"
)))


def highlights(spec: AppSpec) -> list[str]:
    words: list[str] = []
    for word in re.findall(r"[^\W\d_]{4,}", spec.prompt.lower()):
        if word not in _STOPWORDS and word not in words:
            words.append(word)
    picked = [title_case(w) for w in words[:4]]
    return picked or ["Clear structure", "Typed components", "Responsive layout"]


def main_component_name(spec: AppSpec) -> str:
    name = pascal_case(" ".join(spec.subject.split()[:3]), fallback="Main")
    return f"{name}View" if name in {"App", "Main"} else name


def main_view(spec: AppSpec) -> View:
    markup = el("section",
                el("h2", Expr("heading")),
                el("p", Expr("summary"), a={"class": "summary"}),
                el("ul", Each("highlights", "item", "item", el("li", Expr("item"))),
                   a={"class": "highlights"}),
                a={"class": "container main-view"})
    consts = (("heading", spec.title), ("summary", spec.excerpt), ("highlights", highlights(spec)))
    return View(markup, consts)


# --------------------------------------------------------------------------------------------------
# App shells
# --------------------------------------------------------------------------------------------------


def _app_markup(spec: AppSpec, components: Sequence[str]) -> Node:
    comps = [Comp(name) for name in components]
    if spec.family == "landing":
        return el("div", comps[0], el("main", *comps[1:-1]), comps[-1], a={"class": "page"})
    if spec.family == "dashboard":
        sidebar, *rest = comps
        header = el("header", el("h1", Expr("title")))
        return el("div", sidebar, el("main", header, *rest, a={"class": "dashboard-main"}),
                  a={"class": "dashboard"})
    if spec.family in ("form", "todo"):
        return el("main", *comps, a={"class": f"{spec.family}-page"})
    header_class = "blog-header" if spec.family == "blog" else "app-header"
    header = el("header", el("h1", Expr("title")), el("p", Expr("tagline"), a={"class": "tagline"}),
                a={"class": f"container {header_class}"})
    return el("div", header, el("main", *comps))


def app_view(spec: AppSpec, components: Sequence[str]) -> View:
    markup = _app_markup(spec, components)
    consts: tuple[tuple[str, Any], ...] = ()
    if spec.family == "dashboard":
        consts = (("title", f"{spec.title} dashboard"),)
    elif spec.family in ("blog", "generic"):
        consts = (("title", spec.title), ("tagline", spec.excerpt))
    return View(markup, consts, imports=('import "./styles.css";',))


def app_files(spec: AppSpec, components: Sequence[str]) -> list[GeneratedFile]:
    fw = spec.framework
    return [
        GeneratedFile(fw.app_path, render_view(app_view(spec, components), "App", fw, at_root=True)),
        GeneratedFile(fw.entry, entry_module(spec)),
        GeneratedFile("index.html", index_html(spec)),
    ]


# --------------------------------------------------------------------------------------------------
# Blueprints: the plan's tasks and how each one renders its files
# --------------------------------------------------------------------------------------------------

Renderer = Callable[[AppSpec], list[GeneratedFile]]


@dataclass(frozen=True)
class Blueprint:
    id: str
    type: TaskType
    name: str
    description: str
    target: str
    duration: int
    priority: int
    deps: tuple[str, ...]
    instruction: str
    render: Renderer = field(compare=False, repr=False)

    def task(self, spec: AppSpec) -> dict[str, Any]:
        """The task as the mock LLM writes it (field names of docs/plans.md#a-task)."""
        context = (f"{spec.framework.label} + Vite + TypeScript project for {spec.subject}. "
                   f"Build request: {spec.excerpt}")
        return {
            "id": self.id, "type": self.type.value, "name": self.name, "description": self.description,
            "estimatedDuration": self.duration, "priority": self.priority,
            "input": {"prompt": self.instruction, "context": context, "targetPath": self.target,
                      "dependencies": list(self.deps)},
        }


def _single(path: str, content: Callable[[AppSpec], str]) -> Renderer:
    return lambda spec: [GeneratedFile(path, content(spec))]


def _setup_blueprints(spec: AppSpec) -> list[Blueprint]:
    fw = spec.framework
    deps = ", ".join(name for name, _ in (*fw.dependencies, *fw.dev_dependencies))
    return [
        Blueprint("setup-project", TaskType.setup_config, f"Set up the {fw.label} project",
                  f"Create package.json for {spec.subject} with scripts for dev, build and preview.",
                  "package.json", 6, 1, (),
                  f"Write package.json for a {fw.label} + Vite + TypeScript app named {spec.slug}.",
                  _single("package.json", package_json)),
        Blueprint("setup-tooling", TaskType.setup_config, "Configure Vite and TypeScript",
                  f"Add vite.config.ts with the {fw.label} plugin and a strict tsconfig.json.",
                  "vite.config.ts", 8, 2, ("setup-project",),
                  "Write vite.config.ts, tsconfig.json and the Vite type declarations.", tooling_files),
        Blueprint("install-deps", TaskType.install_deps, "Install dependencies",
                  f"Install {deps} and pin the Node version.",
                  ".npmrc", 20, 3, ("setup-project", "setup-tooling"),
                  "Install the dependencies declared in package.json (npm install).", install_files),
    ]


def _component(spec: AppSpec, task_id: str, component: str, name: str, description: str,
               source: Callable[[AppSpec], str], deps: tuple[str, ...] = ("install-deps",),
               duration: int = 12, priority: int = 5) -> Blueprint:
    path = f"src/components/{component}{spec.framework.ext}"
    instruction = f"Write {path}: {description}"
    return Blueprint(task_id, TaskType.create_component, name, description, path, duration, priority,
                     deps, instruction, _single(path, source))


def _view_source(component: str, view: Callable[[AppSpec], View]) -> Callable[[AppSpec], str]:
    return lambda spec: render_view(view(spec), component, spec.framework)


def _support(task_id: str, path: str, name: str, description: str, content: Callable[[AppSpec], str],
             deps: tuple[str, ...] = ("setup-tooling",), duration: int = 8, priority: int = 4) -> Blueprint:
    return Blueprint(task_id, TaskType.create_file, name, description, path, duration, priority, deps,
                     f"Write {path}: {description}", _single(path, content))


def _styles(spec: AppSpec) -> Blueprint:
    return _support("global-styles", "src/styles.css", "Write the global styles",
                    f"Design tokens, layout and component styles for {spec.subject} (accent {spec.accent}).",
                    styles_css, duration=8, priority=6)


def _app_shell(spec: AppSpec, components: Sequence[str], deps: Sequence[str], with_styles: bool) -> Blueprint:
    fw = spec.framework
    styles = "write" if with_styles else "import"
    description = (f"Compose {', '.join(components)} into the {spec.subject} page, {styles} the global "
                   f"styles and mount it from {fw.entry} and index.html.")

    def render(s: AppSpec) -> list[GeneratedFile]:
        files = app_files(s, components)
        return [*files, GeneratedFile("src/styles.css", styles_css(s))] if with_styles else files

    return Blueprint("app-shell", TaskType.create_file, "Assemble the app", description, fw.app_path, 10, 9,
                     tuple(deps), f"Write {fw.app_path}, {fw.entry} and index.html: {description}", render)


def _landing(spec: AppSpec) -> list[Blueprint]:
    parts = [_component(spec, "hero-section", "Hero", f"Build the {spec.subject} hero section",
                        f"Hero section with a headline about {spec.subject}, a tagline and calls to action.",
                        _view_source("Hero", hero_view), duration=15, priority=4)]
    for index, section in enumerate(spec.sections):
        component = _SECTION_COMPONENT[section]
        parts.append(_component(spec, f"{section}-section", component, f"Build the {section} section",
                                f"A {section} section for {spec.subject}.",
                                _view_source(component, _SECTION_VIEWS[section]), priority=5 + index))
    parts.append(_component(spec, "cta-footer", "Footer", "Build the call to action and footer",
                            f"A closing call to action for {spec.subject} and the site footer with links.",
                            _view_source("Footer", footer_view), duration=10, priority=7))
    return parts


def _dashboard(spec: AppSpec) -> list[Blueprint]:
    return [
        _support("metrics-data", "src/data/metrics.ts", "Add the metrics data",
                 f"Typed sample metrics and a weekly series for the {spec.subject} dashboard.",
                 metrics_module),
        _component(spec, "sidebar-nav", "Sidebar", "Build the sidebar navigation",
                   f"Sidebar with the {spec.subject} brand and section links.",
                   _view_source("Sidebar", sidebar_view), duration=10),
        _component(spec, "stats-cards", "StatsCards", "Build the stats cards",
                   "Cards showing each key metric with its weekly change.",
                   _view_source("StatsCards", stats_view), deps=("install-deps", "metrics-data")),
        _component(spec, "chart-panel", "ChartPanel", "Build the weekly chart",
                   "A bar chart of weekly activity drawn with progress bars.",
                   _view_source("ChartPanel", chart_view), deps=("install-deps", "metrics-data"),
                   duration=18),
    ]


def _form(spec: AppSpec) -> list[Blueprint]:
    component = form_component_name(spec)
    return [
        _support("validation-utils", "src/lib/validation.ts", "Write the form validation",
                 f"Field definitions and validation rules for the {spec.subject} form.", validation_module),
        _component(spec, "form-component", component, f"Build the {component}",
                   f"An accessible {spec.variant} form for {spec.subject} with inline validation errors.",
                   form_source, deps=("install-deps", "validation-utils"), duration=18),
    ]


def _blog(spec: AppSpec) -> list[Blueprint]:
    return [
        _support("posts-data", "src/data/posts.ts", "Add the sample posts",
                 f"Typed sample posts about {spec.subject}.", posts_module),
        _component(spec, "post-card", "PostCard", "Build the post card",
                   "A card showing one post's title, date, reading time and excerpt.",
                   _view_source("PostCard", post_card_view), deps=("install-deps", "posts-data"),
                   duration=10),
        _component(spec, "post-list", "PostList", "Build the post list",
                   f"The list of the latest {spec.subject} posts.",
                   _view_source("PostList", post_list_view), deps=("post-card", "posts-data")),
    ]


def _todo(spec: AppSpec) -> list[Blueprint]:
    return [
        _support("todo-store", "src/lib/todos.ts", "Write the todo logic",
                 f"The Todo type, starter items for {spec.subject} and pure add/toggle/remove helpers.",
                 todos_module),
        _component(spec, "todo-list", "TodoList", "Build the todo list",
                   f"The interactive {spec.subject} list: add, complete and remove items.",
                   todo_source, deps=("install-deps", "todo-store"), duration=18),
    ]


def _generic(spec: AppSpec) -> list[Blueprint]:
    component = main_component_name(spec)
    return [_component(spec, "main-view", component, f"Build the {spec.subject} view",
                       f"The main view of {spec.subject}: heading, summary and highlights.",
                       _view_source(component, main_view), duration=15)]


_FAMILIES: dict[str, Callable[[AppSpec], list[Blueprint]]] = {
    "landing": _landing, "dashboard": _dashboard, "form": _form, "blog": _blog, "todo": _todo,
    "generic": _generic,
}
# The components App renders directly (the rest are rendered by them).
_TOP_LEVEL_EXCLUDE = frozenset({"post-card"})


@lru_cache(maxsize=128)
def blueprints(prompt: str, framework: str | None = None) -> tuple[Blueprint, ...]:
    """The plan for `prompt`: set-up, the family's parts, styles, and the app shell (at most 8 tasks:
    when the family has many parts, the app shell writes the styles itself)."""
    spec = build_spec(prompt, framework)
    setup = _setup_blueprints(spec)
    parts = _FAMILIES[spec.family](spec)
    top = [bp for bp in parts if bp.type is TaskType.create_component and bp.id not in _TOP_LEVEL_EXCLUDE]
    components = [posixpath.splitext(posixpath.basename(bp.target))[0] for bp in top]
    deps = [bp.id for bp in top]
    if len(setup) + len(parts) + 2 > MAX_PLAN_TASKS:
        return (*setup, *parts, _app_shell(spec, components, deps, with_styles=True))
    styles = _styles(spec)
    return (*setup, *parts, styles, _app_shell(spec, components, [*deps, styles.id], with_styles=False))


def plan_tasks(prompt: str, framework: str | None = None) -> list[dict[str, Any]]:
    """The deterministic plan for `prompt` as task dicts (fresh objects on every call)."""
    spec = build_spec(prompt, framework)
    return [bp.task(spec) for bp in blueprints(prompt, framework)]


def find_blueprint(prompt: str, framework: str | None, task_id: str) -> Blueprint | None:
    return next((bp for bp in blueprints(prompt, framework) if bp.id == task_id), None)


# --------------------------------------------------------------------------------------------------
# Files for any task (planned or scripted)
# --------------------------------------------------------------------------------------------------


def default_target(task_id: str, task_type: str, framework: str | None = None) -> str:
    """A sensible file for a task that names none."""
    fw = resolve_framework(framework)
    slug = slugify(task_id, fallback="task")
    if task_type == TaskType.create_component:
        return f"src/components/{pascal_case(task_id, fallback='Component')}{fw.ext}"
    if task_type == TaskType.setup_config:
        return f"config/{slug}.json"
    if task_type == TaskType.install_deps:
        return ".npmrc"
    return f"src/{slug}.ts"


_KNOWN_FILES: dict[str, Callable[[AppSpec], str]] = {
    "package.json": package_json, "vite.config.ts": vite_config, "tsconfig.json": tsconfig_json,
    "index.html": index_html, ".npmrc": npmrc, "svelte.config.js": svelte_config,
    "styles.css": styles_css, "vite-env.d.ts": env_declarations,
}
_COMPONENT_EXTS = {".tsx": "react", ".jsx": "react", ".vue": "vue", ".svelte": "svelte"}
_HASH_COMMENT_EXTS = frozenset({".py", ".sh", ".yml", ".yaml", ".toml", ".rb", ".cfg", ".ini", ".env"})


def _placeholder_view(name: str, description: str) -> View:
    markup = el("section", el("h2", Expr("heading")), el("p", Expr("description")), a={"class": "card"})
    return View(markup, (("heading", name), ("description", description)))


def _source_by_extension(spec: AppSpec, path: str, name: str, description: str) -> str:
    base = posixpath.basename(path)
    ext = posixpath.splitext(base)[1].lower()
    if ext in _COMPONENT_EXTS:
        view = _placeholder_view(name, description)
        component = pascal_case(posixpath.splitext(base)[0], fallback="Component")
        return render_view(view, component, FRAMEWORKS[_COMPONENT_EXTS[ext]])
    if ext in (".ts", ".js", ".mjs", ".cjs"):
        value = {"name": name, "description": description}
        return f"export const task = {js(value)};\n\nexport default task;\n"
    if ext in (".css", ".scss"):
        return f"/* {_comment_safe(name)} */\n.{slugify(base, 'block')} {{\n  display: block;\n}}\n"
    if ext in (".html", ".htm"):
        return (f"<!doctype html>\n<html lang=\"en\">\n  <head>\n    <meta charset=\"UTF-8\" />\n"
                f"    <title>{html.escape(name)}</title>\n  </head>\n  <body>\n"
                f"    <p>{html.escape(description)}</p>\n  </body>\n</html>\n")
    if ext == ".json":
        value = {"name": name, "description": description, "generatedBy": "stepwise-mock"}
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    if ext in (".md", ".markdown"):
        return f"# {clean_text(name)}\n\n{clean_text(description)}\n"
    if ext in _HASH_COMMENT_EXTS:
        return f"# {clean_text(name)}\n# {clean_text(description)}\n"
    return f"{clean_text(name)}\n\n{clean_text(description)}\n"


def file_content(spec: AppSpec, path: str, name: str, description: str) -> str:
    """Content for one file: the project template for well-known names, else by extension."""
    known = _KNOWN_FILES.get(posixpath.basename(path))
    return known(spec) if known else _source_by_extension(spec, path, name, description)


def task_files(prompt: str, framework: str | None, task_id: str, task_type: str,
               target_path: str | None, name: str = "", description: str = "") -> list[GeneratedFile]:
    """The files a task writes: its blueprint's files when it is a planned task, else one file."""
    bp = find_blueprint(prompt, framework, task_id)
    spec = build_spec(prompt, framework)
    if bp is not None and (target_path is None or target_path == bp.target):
        return bp.render(spec)
    path = target_path or default_target(task_id, task_type, framework)
    return [GeneratedFile(path, file_content(spec, path, name or task_id, description or name or task_id))]


def modified_content(path: str, existing: str, note: str) -> str:
    """`existing` with a visible, syntax-appropriate change note appended."""
    ext = posixpath.splitext(path)[1].lower()
    text = existing if existing.endswith("\n") or not existing else existing + "\n"
    line = _comment_safe(note)
    if ext == ".json":
        try:
            value = json.loads(existing)
        except ValueError:
            return text
        if isinstance(value, dict):
            value["x-stepwise-note"] = clean_text(note)
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    if ext in (".html", ".htm", ".vue", ".svelte", ".md"):
        return text + f"<!-- {line} -->\n"
    if ext in (".css", ".scss"):
        return text + f"/* {line} */\n"
    if ext in _HASH_COMMENT_EXTS:
        return text + f"# {line}\n"
    return text + f"// {line}\n"


def tidy(text: str, expand_tabs: bool = False) -> str:
    """Trailing whitespace stripped, one final newline; tabs become two spaces when asked."""
    lines = [line.rstrip() for line in text.splitlines()]
    if expand_tabs:
        lines = [line.expandtabs(2) for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def test_module(name: str, description: str) -> str:
    """A Vitest file for a `test_gen` transform."""
    label = clean_text(name) or "module"
    subject = {"name": label, "description": clean_text(description) or label}
    return _fill(template("vitest.test.ts"), subject=js(subject))
