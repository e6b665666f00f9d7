"""The package's shape, held: imports flow one way (no cycle, in the README Layout's order), no module
outgrows one concept (450 lines), the command line starts without torch, and test modules share helpers
only through conftest and the *_cases modules."""

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "meap"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The meap modules ``path`` imports, at the top or inside a function (``from meap.x import y`` counts
    ``meap.x.y`` when that is a module, else ``meap.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("meap"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
    return found & modules


def test_no_import_cycle_inside_the_package():
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}
    # A package's __init__ may re-export its own submodules; every other edge must go one way.
    graph = {name: {dep for dep in deps if not dep.startswith(name + ".")} for name, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join([*trail[trail.index(dep) :], dep])
            if dep not in state:
                visit(dep, [*trail, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(graph) > 30  # the walk saw the package


def test_no_module_over_450_lines():
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_help_presets_and_argument_errors_import_no_torch():
    probe = (
        "import sys\nfrom meap import cli\ncodes = []\n"
        "for argv in (['--help'], ['presets'], ['pretrain', '--lenghts', '1'], ['eval', 'niah', '--bogus']):\n"
        "    try:\n        codes.append(cli.execute(argv))\n"
        "    except SystemExit as exit:\n        codes.append(exit.code)\n"
        "    except Exception as error:\n        codes.append(type(error).__name__)\n"
        "print(codes, sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[0, 0, 'UserError', 'UserError'] []"


def readme_layout() -> list[str]:
    """The modules and packages the README's Layout lists, in its order (``models.py``, ``train``...)."""
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^src/meap/(\S+?)/?\s", readme[readme.index("## Layout") :], flags=re.M)


def test_the_readme_layout_names_every_module_and_package():
    listed = set(readme_layout())
    present = {
        path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem not in ("__init__", "__main__")) or (path / "__init__.py").is_file()
    }
    assert present - listed == set(), "modules the README's Layout does not describe"
    assert listed - present == set(), "the README's Layout names modules that do not exist"


def test_modules_import_only_from_those_above_them_in_the_readme_layout():
    order = [name.removesuffix(".py") for name in readme_layout()]
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}

    def part(module: str) -> str:  # meap.train.build -> train
        return module.split(".")[1]

    upward = sorted(
        f"{name} imports {dep}"
        for name, path in paths.items()
        if name.count(".") and part(name) in order
        for dep in imports_of(path, set(paths))
        if dep.count(".") and part(dep) in order and order.index(part(dep)) > order.index(part(name))
    )
    assert upward == []


def test_the_library_never_imports_the_experiments():
    """The experiments' wing builds on the library; only the command line (and the wing itself) reaches in."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    found = sorted(
        f"{name} imports {dep}"
        for name, path in paths.items()
        if not name.startswith("meap.experiments") and name != "meap.cli"
        for dep in imports_of(path, set(paths))
        if dep.startswith("meap.experiments")
    )
    assert found == []


def test_test_modules_do_not_import_each_other():
    """Shared helpers live in conftest.py, error_cases.py and sft_cases.py, never in a test module."""
    tests = Path(__file__).parent
    modules = {path.stem for path in tests.rglob("test_*.py")}
    found = sorted(
        f"{path.relative_to(tests)} imports {name}"
        for path in tests.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else []
        )
        if name.split(".")[-1] in modules
    )
    assert found == []


def test_the_readme_names_the_set_up_target_and_the_python_names_it_shows():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    makefile = (PACKAGE.parents[1] / "Makefile").read_text(encoding="utf-8")
    assert "make setup" in readme and re.search(r"^setup:", makefile, flags=re.M)
    import importlib

    for dotted in sorted(set(re.findall(r"`(meap(?:\.\w+)+)\(", readme))):  # `meap.x.y(` calls the README shows
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    assert "meap.models.packaged_model_dir(" in readme
