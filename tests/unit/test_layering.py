"""Who may import whom inside heartline (DESIGN.md, "Who may import whom").

Every module under src/heartline is parsed with ``ast``; each ``heartline.*`` import (including
relative ones and those under ``if TYPE_CHECKING:``) is mapped to the top-level part it reaches,
and checked against the table below. No module imports another package's private module
(``heartline.x._y`` from outside x): a package exports what others may use. A package missing from the table fails the test, so a new
package has to take its place in the layering on purpose.

heartline.service runs inside users' programs and is held tighter: every import of its modules,
static or by name, is the standard library, the package itself or one of the faces
heartline.errors and heartline._util (never a private module behind them).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import heartline

ROOT = Path(heartline.__file__).parent

BOTTOM = {"errors", "_util", "config", "api"}
#: Everything a package may import besides itself. "*" means any part not forbidden below.
ALLOWED: dict[str, set[str] | str] = {
    "errors": set(),
    "_util": {"errors"},
    "config": {"errors", "_util"},
    "api": {"errors", "_util", "config"},
    "service": {"errors", "_util"},
    "lock": BOTTOM | {"service"},
    # The lock server: a program built on lock's wire protocol; nothing below it imports it.
    "lockd": BOTTOM | {"service", "lock"},
    "supervise": BOTTOM | {"service", "lock"},
    "cluster": BOTTOM | {"service", "lock", "supervise"},
    "chaos": BOTTOM | {"service", "lock", "supervise", "cluster"},
    "testing": "*",
    "web": "*",
    "daemon": "*",
    "cli": "*",
    # heartline/__init__.py re-exports the public API; __main__ is the CLI entry point.
    "heartline": "*",
    "__main__": "*",
}
#: Parts that only the listed importers may reach, whatever "*" says.
RESERVED = {
    "cli": {"cli", "__main__"},
    "daemon": {"daemon", "cli", "__main__"},
}


@dataclass(frozen=True)
class Edge:
    source: str  # file, relative to src/heartline
    line: int
    importer: str  # top-level part the importing module belongs to
    imported: str  # top-level part it reaches
    text: str


def part_of(module: str) -> str:
    """'heartline.config._loader' -> 'config'; 'heartline' -> 'heartline'."""
    pieces = module.split(".")
    assert pieces[0] == "heartline", module
    return pieces[1] if len(pieces) > 1 else "heartline"


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).with_suffix("")
    parts = ["heartline", *rel.parts]
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def subpackages(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "__init__.py").exists()}


def from_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement in ``package`` imports from."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(
    source: str, module: str, is_package: bool, packages: set[str]
) -> list[tuple[int, str]]:
    """(line, imported heartline module) for every import in ``source``."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "heartline"
            ]
        elif isinstance(node, ast.ImportFrom):
            target = from_target(node, package)
            if target.split(".")[0] != "heartline":
                continue
            if target == "heartline":
                # `from heartline import config` reaches the subpackage, not the root.
                for a in node.names:
                    sub = f"heartline.{a.name}" if a.name in packages else "heartline"
                    found.append((node.lineno, sub))
            else:
                found.append((node.lineno, target))
                # `from heartline.x import _y` reaches the private module (or name) _y of x.
                found += [
                    (node.lineno, f"{target}.{a.name}")
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    return found


def edges(root: Path) -> list[Edge]:
    packages = subpackages(root) | {p.stem for p in root.glob("*.py")}
    out = []
    for path in sorted(root.rglob("*.py")):
        module, is_package = module_name(path, root)
        source = path.read_text(encoding="utf-8")
        for line, target in imports_of(source, module, is_package, packages):
            out.append(
                Edge(str(path.relative_to(root)), line, part_of(module), part_of(target), target)
            )
    return out


def violation(edge: Edge) -> str | None:
    if edge.importer == edge.imported:
        return None
    private = [p for p in edge.text.split(".")[2:] if p.startswith("_") and not p.startswith("__")]
    if private and edge.imported not in ("heartline", "__main__"):
        return (
            f"{edge.text} is private to heartline.{edge.imported}: import what that package "
            "exports (add it to its __all__)"
        )
    if edge.importer not in ALLOWED:
        return f"{edge.importer!r} is not in the layering table of {__name__}"
    reserved_for = RESERVED.get(edge.imported)
    if reserved_for is not None and edge.importer not in reserved_for:
        return f"only {sorted(reserved_for)} may import heartline.{edge.imported}"
    allowed = ALLOWED[edge.importer]
    if allowed == "*" or edge.imported in allowed:
        return None
    return f"heartline.{edge.importer} may import only {sorted(allowed)}"


def test_every_part_of_heartline_is_in_the_table() -> None:
    """Each subpackage and top-level module has a row in the layering table."""
    parts = subpackages(ROOT) | {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    missing = {p for p in parts if p not in ALLOWED}
    assert missing == set(), f"add {sorted(missing)} to ALLOWED in {__file__}"


def test_imports_respect_the_layering() -> None:
    """No module imports a part of heartline its layer may not use."""
    found = edges(ROOT)
    assert len(found) > 20  # the scan really saw the package's imports
    bad = [
        f"{e.source}:{e.line}: imports {e.text}: {why}"
        for e in found
        if (why := violation(e)) is not None
    ]
    assert bad == [], "\n".join(bad)


def test_errors_is_a_leaf() -> None:
    """heartline.errors imports nothing of heartline."""
    assert [e for e in edges(ROOT) if e.importer == "errors"] == []


@pytest.mark.parametrize(
    ("path", "source", "ok"),
    [
        ("config/_x.py", "from heartline.supervise import Supervisor", False),
        ("config/_x.py", "import heartline.api", False),
        ("_util/_x.py", "from heartline.config import Config", False),
        ("errors.py", "from heartline._util import parse_duration", False),
        ("service/_x.py", "from heartline.config import ProgramSpec", False),
        ("supervise/_x.py", "from heartline.daemon import Daemon", False),
        ("web/_x.py", "from heartline.cli import main", False),
        ("daemon/_x.py", "from heartline.cli import main", False),
        ("api/_x.py", "from heartline import supervise", False),
        ("config/_x.py", "from .. import errors", True),
        ("config/_x.py", "from .. import supervise", False),
        ("config/_x.py", "import json, heartline_extras", True),  # not ours: ignored
        ("config/_x.py", "from ..supervise import x", False),
        ("config/_x.py", "from . import _specs", True),
        ("supervise/_x.py", "from heartline.lock import Lock", True),
        ("supervise/_x.py", "from heartline import __version__", False),
        ("cli/_x.py", "from heartline.daemon import run_daemon", True),
        ("daemon/_x.py", "import heartline.supervise._process", False),
        ("daemon/_x.py", "from heartline.supervise._process import spawn", False),
        ("daemon/_x.py", "from heartline.supervise import _statefile", False),
        ("daemon/_x.py", "from heartline.supervise import Supervisor", True),
        ("supervise/_x.py", "from heartline.supervise._process import spawn", True),
        ("supervise/_x.py", "from heartline._util import start_time", True),
        ("supervise/_x.py", "from heartline._util._linux import start_time", False),
        ("__main__.py", "from heartline.cli import main", True),
        ("newpkg/_x.py", "from heartline.errors import HeartlineError", False),
        ("lockd/_x.py", "from heartline.lock import protocol", True),
        ("lock/_x.py", "from heartline.lockd import serve", False),
        ("supervise/_x.py", "from heartline.lockd import LockServer", False),
    ],
)
def test_the_checker_catches_violations(tmp_path: Path, path: str, source: str, ok: bool) -> None:
    """The scan itself flags forbidden imports (so the layering test can fail)."""
    root = tmp_path / "heartline"
    for pkg in ("config", "_util", "service", "supervise", "web", "daemon", "api", "cli", "newpkg",
                "lock", "lockd"):  # fmt: skip
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "__main__.py").write_text("")
    (root / path).write_text(source + "\n")
    problems = [v for e in edges(root) if (v := violation(e)) is not None]
    assert (problems == []) is ok, problems


# --- heartline.service: the standard library, heartline.errors and heartline._util only -----

#: What heartline.service may import of ours besides itself: the two faces, not their insides.
SERVICE_MAY_IMPORT = {"heartline.errors", "heartline._util"}
#: Not the standard library, used when installed and looked up by name (``import_module``).
SERVICE_OPTIONAL = {"psutil"}


def all_imports(source: str, module: str, is_package: bool) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, dynamic?) for every import in ``source``: statements at
    any depth (in functions, under ``if TYPE_CHECKING:``) and ``importlib.import_module`` or
    ``__import__`` calls with a literal name."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = from_target(node, package)
            if target == "heartline" or (node.level and not node.module):
                # `from heartline import errors`, `from . import _stacks`: modules by name.
                found += [(node.lineno, f"{target}.{a.name}", False) for a in node.names]
            else:
                found.append((node.lineno, target, False))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value, True))
    return found


def service_violation(imported: str, dynamic: bool) -> str | None:
    top = imported.split(".", maxsplit=1)[0]
    if top == "heartline":
        if imported in SERVICE_MAY_IMPORT or imported.split(".")[:2] == ["heartline", "service"]:
            return None
        return f"heartline.service may import of heartline only {sorted(SERVICE_MAY_IMPORT)}"
    if top in sys.stdlib_module_names or top == "__future__":
        return None
    if dynamic and top in SERVICE_OPTIONAL:
        return None
    return "heartline.service imports only the standard library (psutil if installed)"


def service_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "service").rglob("*.py")):
        module, is_package = module_name(path, root)
        source = path.read_text(encoding="utf-8")
        for line, imported, dynamic in all_imports(source, module, is_package):
            why = service_violation(imported, dynamic)
            if why is not None:
                bad.append(f"{path.relative_to(root)}:{line}: imports {imported}: {why}")
    return bad


def test_service_imports_only_the_standard_library_errors_and_util() -> None:
    """Every module of heartline.service imports, statically or by name, nothing but the
    standard library, the package itself, and the faces heartline.errors and heartline._util
    (psutil only by name, when installed): it runs inside users' programs."""
    assert len(list((ROOT / "service").rglob("*.py"))) > 5  # the scan sees the package
    assert service_violations(ROOT) == []


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("import json, os.path", True),
        ("from heartline.errors import HeartlineError", True),
        ("from heartline._util import atomic_write", True),
        ("from heartline import errors, _util", True),
        ("from heartline.service._stacks import format_report", True),
        ("from . import _stacks", True),
        ("from ._stacks import format_report", True),
        ("import importlib\npsutil = importlib.import_module('psutil')", True),
        ("reports = importlib.import_module('heartline.service.reports')", True),
        ("from heartline._util._atomic import atomic_write", False),
        ("from heartline.config import ProgramSpec", False),
        ("from heartline import __version__", False),
        ("import heartline.lock", False),
        ("from .. import supervise", False),
        ("def f():\n    from heartline.supervise import spawn", False),
        ("if TYPE_CHECKING:\n    from heartline.api import Client", False),
        ("importlib.import_module('heartline.config')", False),
        ("__import__('heartline.daemon')", False),
        ("import psutil", False),
        ("import yaml", False),
    ],
)
def test_the_service_check_catches_violations(tmp_path: Path, source: str, ok: bool) -> None:
    """The service scan flags every import that is not the standard library, the package
    itself, heartline.errors or heartline._util (so the service test can fail)."""
    root = tmp_path / "heartline"
    (root / "service").mkdir(parents=True)
    (root / "service" / "__init__.py").write_text("")
    (root / "service" / "_x.py").write_text(source + "\n")
    assert (service_violations(root) == []) is ok, service_violations(root)
