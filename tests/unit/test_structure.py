"""The layering the README promises, checked on the source: what imports what, where SQL lives."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_TOKENS = 3_000  # code tokens: about 400 lines of plain code, however the lines are packed
MAX_MODULE_LINES = 450  # and never longer than this, docstrings and comments included
SHARED = ("service.errors", "service.config", "service.clock", "service.text", "service.validation", "service.cron")
# What each side of service/ may import from service/ (besides itself and SHARED): the process
# boundary as folders. Task processes never load the database, the supervisor or the faces.
MAY_IMPORT = {
    "task_process": (),
    "storage": (),
    "supervisor": ("service.storage", "service.task_process"),
    "faces": ("service.storage", "service.supervisor", "service.task_process"),
}


def parse(path: Path) -> ast.Module:
    """The file's syntax tree, parsed on a thread of its own.

    In a test process where the browser tests' Playwright (greenlets) ran, CPython 3.11's parser
    can find its recursion counter off on the main thread ("AST constructor recursion depth
    mismatch"); a new thread starts with a clean one.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ast.parse, path.read_text(), str(path)).result()


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_the_engine_never_imports_the_web_layer() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(m for m in imports(p) if m == "web" or m.startswith("web."))
                 for p in modules("service")}
    assert not {k: v for k, v in offenders.items() if v}


def test_sql_lives_in_the_storage_layer_only() -> None:
    """Outside service/storage (and migrations), nothing builds statements: Engine as a type at most."""
    offenders = {}
    for p in modules("service") + modules("web"):
        if "storage" in p.relative_to(REPO).parts:
            continue
        tree = parse(p)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sqlalchemy"):
                names = {alias.name for alias in node.names}
                if node.module != "sqlalchemy" or names - {"Engine"}:
                    offenders[str(p.relative_to(REPO))] = f"from {node.module} import {', '.join(sorted(names))}"
            elif isinstance(node, ast.Import) and any(a.name.startswith("sqlalchemy") for a in node.names):
                offenders[str(p.relative_to(REPO))] = "import sqlalchemy"
    assert not offenders


def test_task_processes_load_neither_the_database_nor_the_web_stack() -> None:
    """What a zygote imports (the task protocol, the kinds, the host) is lean: forks stay small, and a
    zygote that starts beside its supervisor is ready sooner. The built-in kinds' parameter models
    (pydantic) are checked by submitters, so the zygote does not import them either."""
    code = ("import sys, service.task_process.runner, service.task_process.kinds, service.task_process.zygote; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'starlette', 'web', 'alembic', 'pydantic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]", out


def code_tokens(path: Path) -> int:
    """Tokens of code: comments, blank lines, line breaks and indentation do not count, so packing
    several statements into fewer, longer lines changes nothing (a docstring is one token)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return sum(1 for token in tokens if token.type not in skip)


def test_modules_stay_small_enough_to_read_in_one_sitting() -> None:
    """One concept per module: a module past these sizes holds two, and is split by concept."""
    big = {str(p.relative_to(REPO)): n for p in modules("service") + modules("web")
           if (n := code_tokens(p)) > MAX_MODULE_TOKENS}
    assert not big, f"split these by concept (over {MAX_MODULE_TOKENS} code tokens): {big}"
    long = {str(p.relative_to(REPO)): n for p in modules("service") + modules("web")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these (over {MAX_MODULE_LINES} lines): {long}"


def test_the_folders_of_service_are_its_process_boundaries() -> None:
    """task_process/ and storage/ import nothing of the other sides; supervisor/ never the faces."""
    offenders = {}
    for side, allowed in MAY_IMPORT.items():
        own = f"service.{side}"
        for path in modules(f"service/{side}"):
            bad = sorted(m for m in imports(path) if (m == "service" or m.startswith("service."))
                         and not m.startswith((own, *SHARED, *allowed)) and m != "service")
            if bad:
                offenders[str(path.relative_to(REPO))] = bad
    assert not offenders, offenders


def test_the_zygote_imports_what_every_task_process_needs_before_it_forks() -> None:
    """Forks share what the zygote imported; what it did not, each task process imports after its
    fork (700 forks took 25 s instead of 5 when a linter's autofix dropped these two imports)."""
    zygote = parse(REPO / "service" / "task_process" / "zygote.py")
    main = next(node for node in zygote.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    preloaded = {alias.name for node in ast.walk(main) if isinstance(node, ast.Import) for alias in node.names}
    assert {"service.task_process.runner", "service.task_process.kinds"} <= preloaded, preloaded
