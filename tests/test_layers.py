"""The package's layers (pyproject.toml [tool.importlinter]) hold, and no module imports another of the
package inside a function (such an import hides a cycle; lazy imports are for heavy libraries only)."""

import ast
import subprocess
import sys
from pathlib import Path

import cl_adapters

ROOT = Path(cl_adapters.__file__).parent


def test_lint_imports_passes():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], cwd=ROOT.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_package_import_inside_a_function():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                        [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    if any(n == "cl_adapters" or n.startswith(("cl_adapters.", "hydra_plugins.cl_adapters")) for n in names):
                        found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert not found, f"imports of cl_adapters inside functions (move them to the top; fix the cycle): {found}"
