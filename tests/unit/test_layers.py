"""The architecture as a test: which layer may import which, that only the MCP layer imports the SDK,
that no module imports another in a cycle, and that the package root stays small.

Read from the source with `ast` (every import, including those inside functions), so a rule
broken anywhere fails here with the offending module named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kimi_mcp"

# Layer -> the layers it may import (besides itself). Top to bottom: cli, server, runtime, chat,
# upstream/store, root. `__main__` is the entry point and may import the cli.
ALLOWED: dict[str, set[str]] = {
    "root": set(),
    "store": {"root"},
    "upstream": {"root"},
    "chat": {"root", "upstream", "store"},
    "runtime": {"root", "upstream", "store", "chat"},
    "server": {"root", "upstream", "store", "chat", "runtime"},
    "cli": {"root", "upstream", "store", "chat", "runtime", "server"},
    "__main__": {"cli"},
}
SDK_PACKAGES = ("mcp", "mcp_types", "starlette", "uvicorn", "sse_starlette")
MAX_ROOT_MODULES = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    if parts[1] in ("__main__", "runtime"):
        return parts[1]
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "root"


def imports_of(module: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(our modules it imports, top-level external packages it imports)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            names = [target]
            # `from . import x` / `from .pkg import module` name modules too
            names += [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]
        for name in names:
            if name == "kimi_mcp" or name.startswith("kimi_mcp."):
                while name not in known and "." in name:
                    name = name.rpartition(".")[0]
                if name != module:
                    ours.add(name)
            else:
                external.add(name.split(".")[0])
    return ours, external


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    found = modules()
    known = set(found)
    ours: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, path in found.items():
        ours[module], external[module] = imports_of(module, path, known)
    return ours, external


def test_the_graph_is_read() -> None:
    """Guard against a checker that finds nothing (and so could never fail)."""
    ours, external = graph()
    assert "kimi_mcp.upstream.client" in ours["kimi_mcp.chat.service"] or "kimi_mcp.upstream" in ours[
        "kimi_mcp.chat.service"]
    assert "mcp" in external["kimi_mcp.server.app"]
    assert layer_of("kimi_mcp.server.app") == "server" and layer_of("kimi_mcp.errors") == "root"


def test_each_layer_imports_only_the_layers_below_it() -> None:
    ours, _ = graph()
    broken = []
    for module, targets in ours.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if theirs != mine and theirs not in ALLOWED[mine]:
                broken.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert broken == []


@pytest.mark.parametrize("package", SDK_PACKAGES)
def test_only_the_mcp_layer_imports_the_sdk(package: str) -> None:
    _, external = graph()
    users = sorted(m for m, names in external.items() if package in names and layer_of(m) != "server")
    assert users == []


def test_no_import_cycles() -> None:
    ours, _ = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(ours.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(ours):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_package_root_stays_small() -> None:
    root_modules = [p.name for p in PACKAGE.glob("*.py")]
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules


def test_every_package_says_what_it_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "may import" in doc.lower() or "imports nothing" in doc.lower(), init
