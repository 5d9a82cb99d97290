"""Write the book's API reference: MyST pages generated from attnbook's docstrings, for the website.

    python scripts/api_reference.py            # -> _build/api/*.md (listed in myst.yml's "API reference")
    python scripts/api_reference.py --out DIR

griffe reads the package statically (nothing is imported, so no torch is needed). One page per part of the
package (attention, models, data, train, and the top-level modules); within a page, one section per module
and one entry per public object, with its signature, its docstring (Google style: parameters, returns,
raises) and the chapter that derives it, linked. Every entry has a stable label that chapters can link to:

    [MultiHeadAttention](#api-attnbook-attention-core-MultiHeadAttention)     # canonical path
    [MultiHeadAttention](#api-attnbook-attention-MultiHeadAttention)          # public re-export, same entry

i.e. ``api-`` + the dotted path with ``.`` replaced by ``-``; methods add ``-<method>``; modules have one too
(``api-attnbook-attention-core``) and the reference's start page is ``api-attnbook``.

Which chapter derives an object: a docstring line "Derived in chapter NN" (or "Introduced in chapter NN"),
else a single chapter named in the first paragraph of its docstring, else the chapter of its module (named in
the module's first paragraph, or in its package's list of modules "(ch. NN)"), else the first chapter whose
*Promote* section names it. Every chapter whose Promote section names an object is listed as well.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import griffe
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
PACKAGE = "attnbook"

# The pages of the reference: (page file stem, title, the modules it documents, in order).
PAGES = [
    (
        "attention",
        "attnbook.attention",
        [
            "kernel",
            "additive",
            "functional",
            "masks",
            "core",
            "normalizers",
            "positional",
            "tiled",
            "triton_flash",
            "axial",
            "factorised",
            "grouped",
            "local",
            "windows",
            "routing",
            "histogram",
            "ring",
            "rollout",
            "convolutional",
            "channel",
            "deformable",
            "probing",
            "conditioning",
            "readout",
            "series",
            "recommendation",
            "video",
            "interpret",
            "dynamics",
            "variants",
            "circuits",
        ],
    ),
    (
        "models",
        "attnbook.models",
        [
            "pointer",
            "transformer",
            "gpt",
            "block_transformer",
            "hierarchical",
            "vit",
            "convit",
            "detr",
            "masked",
            "variant_gpt",
        ],
    ),
    (
        "data",
        "attnbook.data",
        [
            "regression",
            "pointer",
            "seq2seq",
            "positions",
            "text",
            "recall",
            "images",
            "shapes",
            "conditional_shapes",
            "speech",
            "series",
            "sessions",
            "video",
            "next_token",
            "circuits",
            "registry",
        ],
    ),
    (
        "train",
        "attnbook.train",
        [
            "engine",
            "modules",
            "data",
            "presets",
            "schedule",
            "callbacks",
            "checkpoint",
            "lock",
            "loggers",
            "curves",
            "help",
        ],
    ),
    ("utilities", "attnbook.config, .profiling, .viz, .cli", ["config", "profiling", "viz", "cli"]),
]
SUBPACKAGES = {"attention", "models", "data", "train"}

CHAPTER_IN_DOC = re.compile(r"\b(?:Derived|Introduced) in chapter (\d\d)\b")
ANY_CHAPTER = re.compile(r"\b(?:chapter|ch\.) ?(\d\d)\b")
CHAPTER_MENTION = re.compile(r"(?<![\w\[])((?:[Cc]hapter|ch\.) ?)(\d\d)\b(?![\]\w])")
ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|exc|obj|cite|math|ref)(?::[pt])?:`([^`]+)`")


def label(path: str) -> str:
    """An entry's label: ``attnbook.attention.core.MultiHeadAttention`` -> ``api-attnbook-attention-core-Multi...``."""
    return "api-" + path.replace(".", "-")


def chapter_link(number: str) -> str:
    return f"[chapter {number}](#ch{number})"


@dataclass
class Entry:
    path: str  # canonical dotted path
    obj: griffe.Object
    aliases: list[str] = field(default_factory=list)  # public re-export paths (attnbook.attention.X)
    derived_in: str | None = None
    promoted_in: list[str] = field(default_factory=list)


def public_members(module: griffe.Module) -> list[griffe.Object]:
    """The objects a module documents: its ``__all__``, else its public functions and classes defined there."""
    names = module.exports if module.exports is not None else [n for n in module.members if not n.startswith("_")]
    members = []
    for name in names:
        member = module.members.get(str(name))
        if member is None or member.is_alias or member.is_module:
            continue
        if member.is_function or member.is_class or (member.is_attribute and module.exports is not None):
            members.append(member)
    return members


def first_paragraph(docstring: griffe.Docstring | None) -> str:
    return docstring.value.strip().split("\n\n")[0] if docstring else ""


def single_chapter(text: str) -> str | None:
    found = set(ANY_CHAPTER.findall(text))
    return found.pop() if len(found) == 1 else None


def docstring_chapter(obj: griffe.Object) -> str | None:
    if not obj.docstring:
        return None
    explicit = CHAPTER_IN_DOC.search(obj.docstring.value)
    return explicit.group(1) if explicit else single_chapter(first_paragraph(obj.docstring))


def module_chapter(package: griffe.Module, module: griffe.Module) -> str | None:
    own = docstring_chapter(module)
    if own:
        return own
    parent = module.parent
    if parent is not None and parent.docstring:
        for line in re.split(r"\n(?=\* )", parent.docstring.value):
            if re.search(rf"attnbook\.{re.escape(module.path.split('.', 1)[1])}`", line):
                return single_chapter(line)
    return None


def promote_mentions(chapter: Path, known: dict[str, Entry], modules: set[str]) -> set[str]:
    """The canonical paths of the objects a chapter's Promote section names (in prose or in its imports)."""
    text = chapter.read_text()
    start = re.search(r"^## Promote\b.*$", text, re.M)
    if not start:
        return set()
    end = re.search(r"^## ", text[start.end() :], re.M)
    section = text[start.end() : start.end() + end.start()] if end else text[start.end() :]
    found: set[str] = set()
    # Imports in the section's code: from attnbook.x import A, B (possibly parenthesised over lines).
    for module, names in re.findall(r"from (attnbook[\w.]*) import \(?([\w\s,]+)\)?", section):
        for name in re.findall(r"\w+", names):
            found.add(f"{module}.{name}")
    # Prose: a bullet or paragraph names modules (`attnbook.x.y`) and, in backticks, objects of those modules.
    for block in re.split(r"\n\s*\n|\n(?=- )", section):
        current: list[str] = []
        for span in re.findall(r"`([^`]+)`", block):
            head = re.match(r"[\w.]+", span.strip())
            if not head:
                continue
            name = head.group()
            if name.startswith(f"{PACKAGE}."):
                if name in modules:
                    current.append(name)
                found.add(name)
            else:
                found.update(f"{module}.{name}" for module in current)
    resolved = set()
    for path in found:
        if path in known:
            resolved.add(known[path].path)
        elif path in modules:
            resolved.add(path)
    return resolved


def collect(package: griffe.Module) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """Every documented object, by canonical path and by every path that reaches it (re-exports included)."""
    entries: dict[str, Entry] = {}
    for _stem, _title, modules in PAGES:
        prefix = _stem if _stem in SUBPACKAGES else None
        for name in modules:
            module = package[f"{prefix}.{name}" if prefix else name]
            entries[module.path] = Entry(module.path, module)
            for member in public_members(module):
                entries[member.path] = Entry(member.path, member)
                if member.is_class:
                    for method in member.members.values():
                        if method.is_function and not method.name.startswith("_") and not method.is_alias:
                            entries[method.path] = Entry(method.path, method)
    by_path = dict(entries)
    for sub in SUBPACKAGES:
        by_path[package[sub].path] = Entry(package[sub].path, package[sub])
    taken = {path.lower() for path in by_path}
    for namespace in [package, *(package[sub] for sub in sorted(SUBPACKAGES))]:
        for name, member in namespace.members.items():
            if member.is_alias and not name.startswith("_"):
                target = member.target_path
                alias = f"{namespace.path}.{name}"
                # Labels are case-insensitive: attnbook.models.GPT would clash with the module attnbook.models.gpt.
                if target in entries and alias.lower() not in taken:
                    taken.add(alias.lower())
                    entries[target].aliases.append(alias)
                    by_path[alias] = entries[target]
                    for method in entries[target].obj.members.values() if entries[target].obj.is_class else []:
                        if method.path in entries:
                            by_path[f"{alias}.{method.name}"] = entries[method.path]
    return entries, by_path


def assign_chapters(package: griffe.Module, entries: dict[str, Entry], by_path: dict[str, Entry]) -> None:
    modules = {path for path, e in entries.items() if e.obj.is_module}
    promoted: dict[str, list[str]] = defaultdict(list)
    for chapter in sorted(CHAPTERS.glob("[0-9][0-9]-*.md")):
        for path in promote_mentions(chapter, by_path, modules):
            promoted[path].append(chapter.name[:2])
    for path, entry in entries.items():
        entry.promoted_in = promoted.get(path, [])
        obj = entry.obj
        module = obj if obj.is_module else obj.module
        owner = obj.parent if obj.is_function and obj.parent is not None and obj.parent.is_class else None
        candidates = [
            docstring_chapter(obj),
            docstring_chapter(owner) if owner is not None else None,
            module_chapter(package, module),
            entry.promoted_in[0] if entry.promoted_in else None,
            (promoted.get(owner.path) or [None])[0] if owner is not None else None,
        ]
        entry.derived_in = next((c for c in candidates if c), None)


class Converter:
    """Docstring text (reStructuredText-flavoured Google style) -> MyST markdown."""

    def __init__(self, by_path: dict[str, Entry], bib_keys: set[str]):
        self.by_path = by_path
        self.bib_keys = bib_keys
        self.short: dict[str, set[str]] = defaultdict(set)
        for path, entry in by_path.items():
            self.short[path.rsplit(".", 1)[-1]].add(entry.path)

    def resolve(self, target: str, context: str) -> str | None:
        target = target.lstrip("~.")
        if target in self.by_path:
            return self.by_path[target].path
        if f"{PACKAGE}.{target}" in self.by_path:
            return self.by_path[f"{PACKAGE}.{target}"].path
        # Relative to the module (or class) being documented.
        scope = context
        while scope:
            if f"{scope}.{target}" in self.by_path:
                return self.by_path[f"{scope}.{target}"].path
            scope = scope.rpartition(".")[0]
        candidates = self.short.get(target.rsplit(".", 1)[-1], set())
        return next(iter(candidates)) if len(candidates) == 1 and "." not in target else None

    def role(self, match: re.Match, context: str) -> str:
        kind, value = match.groups()
        if kind == "cite":
            keys = [k.strip() for k in value.split(",")]
            if all(k in self.bib_keys for k in keys):
                return "{cite:p}`" + ",".join(keys) + "`"
            return f"({value})"
        if kind == "math":
            return f"${value}$"
        title, _, explicit = value.partition(" <")
        target = explicit.rstrip(">") if explicit else value
        shown = title if explicit else (target.lstrip("~").rsplit(".", 1)[-1] if value.startswith("~") else target)
        suffix = "()" if kind in ("func", "meth") and not shown.endswith(")") else ""
        path = self.resolve(target, context)
        if path:
            return f"[`{shown}{suffix}`](#{label(path)})"
        return f"`{shown}{suffix}`"

    def chapter(self, match: re.Match) -> str:
        """A mention "chapter 04" / "ch. 04" in a docstring: a link to the chapter, when it is written."""
        number = match.group(2)
        if not any(CHAPTERS.glob(f"{number}-*.md")):
            return match.group(0)
        return f"[{match.group(1)}{number}](#ch{number})"

    def inline(self, text: str, context: str) -> str:
        # ``code`` -> `code` (a code span stays as it is, roles inside it too).
        parts = re.split(r"(``.+?``)", text, flags=re.S)
        out = []
        for i, part in enumerate(parts):
            if i % 2:
                code = part[2:-2]
                out.append(f"`` {code} ``" if "`" in code else f"`{code}`")
            else:
                part = ROLE.sub(lambda m: self.role(m, context), part)
                part = CHAPTER_MENTION.sub(self.chapter, part)
                # A bare "<" that would start an HTML tag, and "$" (MyST math) are escaped.
                part = re.sub(r"<(?=[A-Za-z/!])", r"\\<", part)
                out.append(part.replace("$", r"\$") if ":math:" not in text else part)
        return "".join(out)

    def block(self, text: str, context: str) -> str:
        """Paragraphs, lists and ``::`` literal blocks (and >>> examples) of a docstring section."""
        text = re.sub(r"``(.+?)``", lambda m: "``" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "``", text, flags=re.S)
        lines = text.strip("\n").split("\n")
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            directive = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
            if directive:
                # reStructuredText display math: the rest of the line and the lines indented under it.
                indent = len(directive.group(1))
                math = [directive.group(2)] if directive.group(2).strip() else []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    math.append(lines[i].strip())
                    i += 1
                out += ["", "```{math}", "\n".join(m for m in math if m).strip(), "```", ""]
                continue
            if line.lstrip().startswith(">>>"):
                start = i
                while i < len(lines) and lines[i].strip():
                    i += 1
                out += ["```pycon", *[ln.strip() for ln in lines[start:i]], "```"]
                continue
            literal = line.rstrip().endswith("::")
            if literal:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(self.inline(head + (":" if not line.rstrip().endswith(" ::") else ""), context))
                i += 1
                while i < len(lines) and not lines[i].strip():
                    i += 1
                start = i
                indent = len(lines[i]) - len(lines[i].lstrip()) if i < len(lines) else 0
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) >= indent):
                    if indent == 0 and not lines[i].strip():
                        break
                    i += 1
                code = [ln[indent:] for ln in lines[start:i]]
                while code and not code[-1].strip():
                    code.pop()
                out += [
                    "",
                    "```python"
                    if re.search(r"^\s*(\w+ = |from |import |def |class )", "\n".join(code), re.M)
                    else "```text",
                    *code,
                    "```",
                    "",
                ]
                continue
            out.append(self.inline(line, context))
            i += 1
        return "\n".join(out).strip()


def annotation(value) -> str:
    return str(value) if value is not None else ""


def signature(obj: griffe.Object) -> str:
    if obj.is_class:
        init = obj.members.get("__init__")
        params = ", ".join(str_param(p) for p in init.parameters if p.name != "self") if init is not None else ""
        bases = ", ".join(str(b) for b in obj.bases)
        return f"class {obj.name}({params})" + (f"  # bases: {bases}" if bases else "")
    if obj.is_function:
        params = list(obj.parameters)
        if params and params[0].name in ("self", "cls"):
            params = params[1:]
        text = ", ".join(str_param(p) for p in params)
        ret = f" -> {obj.returns}" if obj.returns is not None else ""
        return f"def {obj.name}({text}){ret}"
    value = f" = {obj.value}" if getattr(obj, "value", None) is not None else ""
    ann = f": {obj.annotation}" if getattr(obj, "annotation", None) is not None else ""
    return f"{obj.name}{ann}{value}"


def str_param(p: griffe.Parameter) -> str:
    kind = p.kind
    prefix = {"variadic positional": "*", "variadic keyword": "**"}.get(kind.value if kind else "", "")
    text = f"{prefix}{p.name}"
    if p.annotation is not None:
        text += f": {p.annotation}"
    if p.default is not None and not prefix:
        text += f" = {p.default}" if p.annotation is not None else f"={p.default}"
    return text


def with_keyword_only(obj: griffe.Object, text: str) -> str:
    """Insert the bare ``*`` before the first keyword-only parameter (griffe's parameters do not show it)."""
    func = obj.members.get("__init__") if obj.is_class else obj
    if func is None or not func.is_function:
        return text
    params = [p for p in func.parameters if p.name not in ("self", "cls")]
    first_kw = next((p for p in params if p.kind and p.kind.value == "keyword-only"), None)
    has_var = any(p.kind and p.kind.value == "variadic positional" for p in params)
    if first_kw is None or has_var:
        return text
    rendered = str_param(first_kw)
    return text.replace(f"({rendered}", f"(*, {rendered}", 1).replace(f", {rendered}", f", *, {rendered}", 1)


def wrap(sig: str, width: int = 88) -> str:
    """A long signature with one parameter per line (top-level commas only), as a formatter would write it."""
    if len(sig) <= width or "(" not in sig:
        return sig
    head, _, rest = sig.partition("(")
    depth, close = 1, None
    for i, char in enumerate(rest):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if depth == 0:
            close = i
            break
    if close is None:
        return sig
    params, tail = rest[:close], rest[close + 1 :]
    parts, depth, current = [], 0, ""
    for char in params:
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return head + "(\n" + "".join(f"    {p},\n" for p in parts if p) + ")" + tail


def render_sections(obj: griffe.Object, conv: Converter) -> list[str]:
    if not obj.docstring:
        return ["*No docstring.*"]
    context = obj.path if obj.is_module or obj.is_class else obj.parent.path
    func = obj.members.get("__init__") if obj.is_class else obj
    annotations = {p.name: p.annotation for p in func.parameters} if func is not None and func.is_function else {}
    out: list[str] = []
    for section in obj.docstring.parse("google", warnings=False):
        kind = section.kind.value
        if kind == "text":
            out += [conv.block(section.value, context), ""]
        elif kind in ("parameters", "other parameters", "attributes"):
            title = kind.capitalize()
            out.append(f"**{title}**\n")
            for item in section.value:
                ann = item.annotation if item.annotation is not None else annotations.get(item.name)
                shown = f" (`{ann}`)" if ann is not None else ""
                desc = conv.block(item.description, context).replace("\n", "\n  ")
                out.append(f"- `{item.name}`{shown}: {desc}")
            out.append("")
        elif kind in ("returns", "yields"):
            out.append(f"**{kind.capitalize()}**\n")
            for item in section.value:
                name = f"`{item.name}` " if item.name else ""
                ann = f"(`{item.annotation}`)" if item.annotation is not None and not item.name else ""
                desc = conv.block(item.description, context).replace("\n", "\n  ")
                out.append(f"- {name}{ann}{': ' if (name or ann) and desc else ''}{desc}")
            out.append("")
        elif kind in ("raises", "warns"):
            out.append(f"**{kind.capitalize()}**\n")
            for item in section.value:
                desc = conv.block(item.description, context).replace("\n", "\n  ")
                out.append(f"- `{item.annotation}`: {desc}")
            out.append("")
        elif kind == "examples":
            out.append("**Examples**\n")
            for sub_kind, value in section.value:
                example = sub_kind.value == "examples"
                out += [f"```pycon\n{value}\n```" if example else conv.block(value, context), ""]
        elif kind == "admonition":
            out += [f"**{section.title or 'Note'}**\n", conv.block(section.value.description, context), ""]
        else:
            out += [conv.block(str(section.value), context), ""]
    return out


def entry_markdown(entry: Entry, conv: Converter, github: str, depth: int) -> list[str]:
    obj = entry.obj
    out = [f"({label(entry.path)})="]
    if obj.is_class:
        kind = "class"
    elif obj.parent is not None and obj.parent.is_class:
        kind = "method"
    else:
        kind = "function" if obj.is_function else "attribute"
    out.append(f"{'#' * depth} `{obj.name}`\n")
    for alias in entry.aliases:
        # A heading takes one label: the public path labels an empty block right under it (same place).
        out += [f"({label(alias)})=", ":::{div}", ":::", ""]
    out += ["```python", wrap(with_keyword_only(obj, signature(obj))), "```", ""]
    facts = [f"*{kind}* `{entry.path}`"]
    if entry.aliases:
        facts.append("also " + ", ".join(f"`{alias}`" for alias in entry.aliases))
    if entry.derived_in:
        facts.append(f"derived in {chapter_link(entry.derived_in)}")
    others = [c for c in entry.promoted_in if c != entry.derived_in]
    if others:
        facts.append("promoted in " + ", ".join(chapter_link(c) for c in others))
    if github and obj.lineno:
        source = f"{github}/blob/main/{PACKAGE}/{Path(*obj.relative_package_filepath.parts[1:]).as_posix()}"
        facts.append(f"[source]({source}#L{obj.lineno}-L{obj.endlineno or obj.lineno})")
    out += [" · ".join(facts), ""]
    out += render_sections(obj, conv)
    return out


def module_markdown(module_entry: Entry, entries: dict[str, Entry], conv: Converter, github: str) -> list[str]:
    module = module_entry.obj
    out = [f"({label(module.path)})=", f"## `{module.path}`", ""]
    if module_entry.derived_in:
        out += [f"Derived in {chapter_link(module_entry.derived_in)}.", ""]
    out += render_sections(module, conv) if module.docstring else []
    for member in public_members(module):
        entry = entries[member.path]
        out += entry_markdown(entry, conv, github, 3)
        if member.is_class:
            for method in member.members.values():
                if method.path in entries and method.path != member.path:
                    out += entry_markdown(entries[method.path], conv, github, 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "api")
    args = parser.parse_args()
    logging.getLogger("griffe").setLevel(logging.ERROR)
    package = griffe.load(PACKAGE, search_paths=[str(ROOT)], docstring_parser="google")
    entries, by_path = collect(package)
    assign_chapters(package, entries, by_path)
    bib_keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.M))
    conv = Converter(by_path, bib_keys)
    github = yaml.safe_load((ROOT / "myst.yml").read_text())["project"].get("github", "").rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    index = [
        "---",
        "title: API reference",
        "---",
        "",
        f"({label(PACKAGE)})=",
        "# API reference",
        "",
        "The reference of `attnbook`, generated from its docstrings. Each entry names the chapter that derives "
        "it; a chapter links to an entry with `[name](#api-attnbook-<module>-<Name>)`.",
        "",
        conv.block(package.docstring.value, PACKAGE),
        "",
        "## Contents",
        "",
    ]
    for stem, title, modules in PAGES:
        prefix = f"{PACKAGE}.{stem}" if stem in SUBPACKAGES else PACKAGE
        body = ["---", f"title: {title}", "---", ""]
        if stem in SUBPACKAGES:
            sub = package[stem]
            body += [f"({label(sub.path)})=", f"# {title}", "", *render_sections(sub, conv), ""]
            if stem == "train":
                body += ["How the chapters use it: [How the book trains models](#appendix-training).", ""]
        else:
            body += [f"# {title}", ""]
        for name in modules:
            body += module_markdown(entries[f"{prefix}.{name}"], entries, conv, github)
        (args.out / f"api-{stem}.md").write_text("\n".join(body).rstrip() + "\n")
        links = ", ".join(f"[`{name}`](#{label(f'{prefix}.{name}')})" for name in modules)
        index.append(f"- [{title}](./api-{stem}.md): {links}")
        written.append(stem)
    (args.out / "api.md").write_text("\n".join(index) + "\n")
    count = sum(1 for e in entries.values() if not e.obj.is_module)
    with_chapter = sum(1 for e in entries.values() if not e.obj.is_module and e.derived_in)
    print(f"API reference: {len(written) + 1} pages, {count} entries ({with_chapter} with their chapter) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
