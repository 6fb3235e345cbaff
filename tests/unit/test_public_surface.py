"""The public surface: every name a package promises in __all__ exists and is what it says."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import heartline
import heartline.errors


def public_modules() -> list[str]:
    """heartline, its subpackages, its public top-level modules, and the public modules and
    packages below those at any depth (such as heartline.service.reports)."""
    names = ["heartline"]
    for info in pkgutil.walk_packages(heartline.__path__, "heartline."):
        parts = info.name.split(".")[1:]
        private = any(part.startswith("_") for part in parts)
        # A private top-level package (heartline._util) is a face the other packages use.
        if not private or (info.ispkg and len(parts) == 1):
            names.append(info.name)
    return sorted(names)


def test_the_package_root_exports_its_promised_names() -> None:
    """heartline exports HeartlineError and a PEP 440-ish __version__."""
    assert set(heartline.__all__) >= {"HeartlineError", "__version__"}
    assert heartline.HeartlineError is heartline.errors.HeartlineError
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", heartline.__version__)


def test_every_subpackage_is_covered() -> None:
    """The scan sees the packages the design names that exist today."""
    found = set(public_modules())
    assert {"heartline.config", "heartline.supervise", "heartline.api", "heartline.errors",
            "heartline._util", "heartline.daemon", "heartline.cli", "heartline.service",
            "heartline.service.reports", "heartline.service.backdoor"} <= found  # fmt: skip


@pytest.mark.parametrize("name", public_modules())
def test_all_names_exist_and_are_unique(name: str) -> None:
    """Each public package declares __all__; every name in it exists, once."""
    module: ModuleType = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    exported = list(module.__all__)
    assert exported, f"{name}.__all__ is empty"
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"
    private = [n for n in exported if n.startswith("_") and not n.startswith("__")]
    assert private == [], f"{name}.__all__ exports private names: {private}"


@pytest.mark.parametrize("name", public_modules())
def test_star_import_gives_exactly_all(name: str) -> None:
    """`from PACKAGE import *` works and binds exactly the names of __all__."""
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(importlib.import_module(name).__all__)


def public_home(module: str) -> str:
    """The module users import a name of ``module`` from: ``module`` itself when it is one of
    :func:`public_modules`, else the nearest package above it that is
    (heartline.config._specs -> heartline.config)."""
    surface = set(public_modules())
    while module not in surface:
        module = module.rpartition(".")[0]
    return module


@pytest.mark.parametrize("name", public_modules())
def test_public_classes_say_where_users_import_them_from(name: str) -> None:
    """Each class a public module exports names in ``__module__`` (which tracebacks, repr() and
    pickles show) a module from which users import it under its own name: a public module, or
    a private one whose package exports it (heartline.config._specs.ProgramSpec is imported
    from heartline.config)."""
    module = importlib.import_module(name)
    for exported in module.__all__:
        obj = getattr(module, exported)
        if not isinstance(obj, type):
            continue
        home = importlib.import_module(public_home(obj.__module__))
        where = f"{name}.{exported} says {obj.__module__}.{obj.__qualname__}"
        assert obj.__qualname__ in home.__all__, f"{where}, but {home.__name__} does not export it"
        assert getattr(home, obj.__qualname__) is obj, f"{where}, which is another object"


def test_every_error_is_in_the_tree() -> None:
    """Every exported error derives from HeartlineError and has an integer exit code (the
    module's other exports are the exit codes themselves)."""
    for name in heartline.errors.__all__:
        cls = getattr(heartline.errors, name)
        if name.startswith("EXIT_"):
            assert isinstance(cls, int | dict), name
            continue
        assert issubclass(cls, heartline.errors.HeartlineError), name
        assert isinstance(cls.exit_code, int), name
        assert cls.__doc__, f"{name} has no docstring"


def service_exceptions() -> list[type[BaseException]]:
    """Every exception class the modules of heartline.service define, the private ones too."""
    import heartline.service

    found: dict[int, type[BaseException]] = {}
    for info in pkgutil.iter_modules(heartline.service.__path__, "heartline.service."):
        for obj in vars(importlib.import_module(info.name)).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("heartline.service")
            ):
                found[id(obj)] = obj
    return sorted(found.values(), key=lambda cls: cls.__qualname__)


def test_service_errors_are_in_the_tree_with_exit_codes_of_their_own() -> None:
    """Every exception class of heartline.service (private modules included) derives from
    HeartlineError, and an exit code it carries besides 1 (failed) and 2 (you did it) is not
    the code heartline.errors gives an error of another meaning (one it does not derive
    from): the CLI's exit code says which error ended it."""
    tree = [
        getattr(heartline.errors, name)
        for name in heartline.errors.__all__
        if not name.startswith("EXIT_")
    ]
    found = service_exceptions()
    assert {"ReportsError", "SignalInUse", "BackdoorError", "BackdoorInUse", "UnsafePath",
            "WatchdogTimeout"} <= {cls.__qualname__ for cls in found}  # fmt: skip
    for cls in found:
        assert issubclass(cls, heartline.errors.HeartlineError), cls.__qualname__
        code = cls.exit_code  # type: ignore[attr-defined]
        if code in (1, 2):
            continue
        clash = [e.__name__ for e in tree if e.exit_code == code and not issubclass(cls, e)]
        assert clash == [], f"{cls.__qualname__} exits {code}, as {clash} do"


def test_error_exit_codes() -> None:
    """The CLI's exit codes per error class are stable."""
    e = heartline.errors
    assert e.HeartlineError.exit_code == 1
    assert e.UsageError.exit_code == 2
    assert e.ConfigError.exit_code == 2
    assert e.DaemonNotRunning.exit_code == 3
    assert e.UnknownProgram.exit_code == 4
    assert e.PermissionDenied.exit_code == 5
    assert e.DaemonAlreadyRunning.exit_code == 6
    assert e.ProtocolError.exit_code == 7


def test_unknown_program_carries_the_name() -> None:
    """UnknownProgram keeps the program name and mentions it in its message."""
    err = heartline.errors.UnknownProgram("web")
    assert err.name == "web"
    assert "'web'" in str(err)


def test_config_error_without_line_or_key() -> None:
    """ConfigError leaves out the parts it does not know."""
    CE = heartline.errors.ConfigError
    assert str(CE("bad", file="f.toml")) == "f.toml: bad"
    assert str(CE("bad", file="f.toml", line=3)) == "f.toml:3: bad"
    assert str(CE("bad", key="a.b")) == "<config>: a.b: bad"
    assert CE("bad", file="f", key="k", line=1).reason == "bad"


def all_exceptions() -> list[type[BaseException]]:
    """Every exception class any module of heartline defines (private modules included)."""
    found: dict[int, type[BaseException]] = {}
    for info in pkgutil.walk_packages(heartline.__path__, "heartline."):
        if info.name.endswith("__main__"):
            continue
        for obj in vars(importlib.import_module(info.name)).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("heartline")
            ):
                found[id(obj)] = obj
    return sorted(found.values(), key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def test_every_exception_of_every_module_is_in_the_tree_with_a_code_from_the_table() -> None:
    """Walking every module: each exception class not private to its module derives from
    HeartlineError, and each HeartlineError's exit code is one of heartline.errors.EXIT_CODES."""
    found = all_exceptions()
    assert len(found) > 30  # the walk sees the whole tree
    outside = [
        f"{c.__module__}.{c.__qualname__}"
        for c in found
        if not issubclass(c, heartline.errors.HeartlineError) and not c.__name__.startswith("_")
    ]
    assert outside == []
    unlisted = {
        f"{c.__module__}.{c.__qualname__}": c.exit_code
        for c in found
        if issubclass(c, heartline.errors.HeartlineError)
        and c.exit_code not in heartline.errors.EXIT_CODES
    }
    assert unlisted == {}


def test_the_readme_exit_code_table_is_the_one_in_errors() -> None:
    """README.md's exit-code table lists exactly the codes of heartline.errors.EXIT_CODES."""
    readme = (Path(heartline.__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Exit codes") :]
    section = section[: section.index("\n## ")]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert codes == set(heartline.errors.EXIT_CODES)
