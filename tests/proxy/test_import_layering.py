"""No proxy module hides an import of the project's own packages inside a function, and the planes
below the process (data plane, control plane, shadow, health) never import what composes them.

An import moved into a function to dodge a circle hides a dependency that runs back up the layers; the
fix is a lower module both sides import (`proxy.admin.errors`, `proxy.cli.support`). The one accepted
reason is cost: a command that must not load a slow library until it runs (`cutover --help` loads none,
`tests/proxy/test_cli_imports.py`). Such an import says so with a `# lazy: <what it brings>` comment on
its line or just above its group of imports. Source only (AST walks), no import: ~0.5 s.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = frozenset(
    p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in {"tests"}
)
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
PLANES = ("dataplane", "control", "shadow", "health")
ABOVE_THE_PLANES = ("proxy.runtime", "proxy.server", "proxy.admin", "proxy.cli")


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return ["." if node.level else (node.module or "")]
    return [alias.name for alias in node.names]


def _function_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child, in_function or isinstance(child, SCOPES))

    visit(tree, False)
    return found


def _stated_reason(lines: list[str], node: ast.Import | ast.ImportFrom) -> bool:
    """`# lazy: why` on the import's line, or in the comments right above its run of import lines."""
    if "# lazy:" in lines[node.lineno - 1]:
        return True
    row = node.lineno - 2
    while row >= 0:
        text = lines[row].strip()
        if text.startswith("#"):
            if text.startswith("# lazy:") and text.removeprefix("# lazy:").strip():
                return True
        elif not text.startswith(("import ", "from ")):
            return False
        row -= 1
    return False


def hidden_imports(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in _function_imports(ast.parse(source, filename=str(path))):
            for name in _imported(node):
                package = name.split(".")[0]
                if (package in PROJECT_PACKAGES or name == ".") and not _stated_reason(lines, node):
                    where = f"{path.relative_to(root.parent)}:{node.lineno}"
                    problems.append(f"{where}: imports {name} inside a function")
    return problems


def test_proxy_imports_its_project_packages_at_module_level() -> None:
    assert {"proxy", "config", "routing", "buffer_worker"} <= PROJECT_PACKAGES, "the walk found no packages"
    problems = hidden_imports(ROOT / "proxy")
    assert not problems, (
        "a function-level import of the project hides a dependency (move the shared part into a lower "
        "module both import), or, for a slow library only, say so with `# lazy: <why>`:\n  "
        + "\n  ".join(problems)
    )


def test_the_walk_flags_a_hidden_import_and_passes_a_stated_one(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(
        "import json\n"
        "\n"
        "\n"
        "def run():\n"
        "    import csv\n"
        "    from proxy.server import serve\n"
        "    return lambda: __import__('json')\n"
        "\n"
        "\n"
        "def work():\n"
        "    # lazy: Redis, asyncpg\n"
        "    from buffer_worker.runner import run_worker\n"
        "    from config.settings import Settings\n"
        "    from proxy.demo.backend import serve_backend  # lazy: FastAPI\n",
        encoding="utf-8",
    )
    expected = f"{tmp_path.name}/example.py:6: imports proxy.server inside a function"
    assert hidden_imports(tmp_path) == [expected]


def upward_imports(root: Path) -> list[str]:
    problems = []
    for plane in PLANES:
        for path in sorted((root / plane).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for name in _imported(node):
                        if name.startswith(ABOVE_THE_PLANES):
                            problems.append(f"{path.relative_to(root.parent)}:{node.lineno}: imports {name}")
    return problems


def test_the_planes_import_nothing_that_composes_them() -> None:
    assert all((ROOT / "proxy" / plane).is_dir() for plane in PLANES), "a plane moved: update PLANES"
    problems = upward_imports(ROOT / "proxy")
    assert not problems, (
        "a plane imports the process, the admin API or the CLI above it (move what both need into the "
        "plane):\n  " + "\n  ".join(problems)
    )
