"""The layout ARCHITECTURE.md promises, checked on the source: the library (imgidx.indexer, imgidx.search and the
API in imgidx/*.py) never imports a face (imgidx.cli, imgidx.service), the service never imports the CLI, and the
module-level import graph has no cycle. Imports under `if TYPE_CHECKING:` are annotations only and do not count."""

from __future__ import annotations

import ast
import fnmatch
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("imgidx.indexer", "indexer"), ("imgidx.search", "search"), ("imgidx", "imgidx"))
FACES = ("imgidx.cli", "imgidx.service")
ENTRY_POINTS = {"imgidx.__main__"}  # `python -m imgidx` is the CLI itself


def modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.with_suffix("").relative_to(ROOT / folder).parts
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


@functools.cache
def import_graph(*, typing: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports; typing=True counts imports under `if TYPE_CHECKING:` too."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = parsed()[path.relative_to(ROOT).as_posix()]  # parsed once for every scan
        typing_only = {
            id(x)
            for n in ast.walk(tree)
            if not typing and isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for b in n.body
            for x in ast.walk(b)
        }
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                candidates = subs or [target]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in mods and c != name}
        graph[name] = deps
    return graph


def test_the_library_never_imports_a_face_and_the_service_never_the_cli():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the modules
    library = {m for m in graph if not m.startswith(FACES) and m not in ENTRY_POINTS}
    assert [(a, b) for a in library for b in graph[a] if b.startswith(FACES)] == []
    service = {m for m in graph if m.startswith("imgidx.service")}
    assert [(a, b) for a in service for b in graph[a] if b.startswith("imgidx.cli")] == []


def layer(module: str) -> int:
    """0 imgidx.indexer (photos in; and imgidx._version, a constant), 1 imgidx.search (reading vectors), 2 the API
    (imgidx/*.py and the operations behind it, imgidx.ops), 3 the faces."""
    if module == "imgidx._version":
        return 0
    if module.startswith(FACES) or module in ENTRY_POINTS:
        return 3
    if module.startswith("imgidx.search"):
        return 1
    if module.startswith("imgidx.indexer"):
        return 0
    # the API: imgidx itself, its modules (imgidx/*.py) and the operations' package; nothing else is left
    assert module.count(".") <= 1 or module.startswith("imgidx.ops."), module
    return 2


def test_no_layer_imports_a_higher_one():
    """ARCHITECTURE.md: data flows one way; indexer/ knows nothing of search/, neither knows the API's records."""
    graph = import_graph()
    assert [(a, b) for a in graph for b in graph[a] if layer(b) > layer(a)] == []
    assert layer("imgidx.search.knn") < layer("imgidx.ops.dataset") == layer("imgidx.results") < layer("imgidx.cli.app")
    assert layer("imgidx.indexer.store") < layer("imgidx.search.duplicates") < layer("imgidx.ops")
    # the scan sees the operations' own imports: ops.dataset reads search/, and the API reads ops
    assert "imgidx.search.duplicates" in graph["imgidx.ops.dataset"] and "imgidx.ops" in graph["imgidx.index"]


@pytest.mark.parametrize("typing", [False, True], ids=["runtime", "with-annotations"])
def test_the_import_graph_has_no_cycle(typing):
    graph = import_graph(typing=typing)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


# ---- rules that read the code: each scan also proves on a sample that it finds what it forbids -----------------

LIBRARY = ("imgidx", "indexer", "search")  # the folders of the installed package (tests and bench are not)


@functools.cache
def parsed() -> dict[str, ast.Module]:
    """Every .py of the package by its path in the repository (parsed once for all the scans)."""
    return {
        path.relative_to(ROOT).as_posix(): ast.parse(path.read_text(), str(path))
        for folder in LIBRARY
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


def sources(*, outside: tuple[str, ...] = ()) -> dict[str, ast.Module]:
    """parsed(), except the files under `outside` (paths or folders)."""
    return {
        rel: tree
        for rel, tree in parsed().items()
        if not any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in outside)
    }


def strings(tree: ast.AST, *, code: bool = False) -> list[tuple[int, str]]:
    """Every string literal (f-string parts too), with its line; code=True: not docstrings (prose about the rule
    may name what the code may not use)."""
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)} if code else set()
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in prose
    ]


SQL_CALLS = {"execute", "executemany", "executescript"}
SQL_TEXT = re.compile(
    r"\bSELECT\b[\s\S]+\bFROM\b|\bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bPRAGMA\s+\w+|\b(?:CREATE|DROP|ALTER)\s+(?:TABLE|INDEX|VIEW|TRIGGER)\b|\bBEGIN\s+(?:IMMEDIATE|EXCLUSIVE)\b"
    r"|\bVACUUM\b|\bWHERE\s+\w+\s*(?:=|IN|IS)\s"
)


def sql_found(trees: dict[str, ast.Module]) -> list[str]:
    found = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                found.append(f"{rel}:{node.lineno}: .{node.func.attr}()")
        found += [f"{rel}:{line}: {text[:60]!r}" for line, text in strings(tree) if SQL_TEXT.search(text)]
    return found


def test_sql_runs_only_in_the_store():
    """ARCHITECTURE.md: only `indexer/store/` talks to SQLite: no execute call, no SQL text anywhere else."""
    assert sql_found(sources(outside=("indexer/store",))) == []
    in_store = sql_found({k: v for k, v in sources().items() if k.startswith("indexer/store/")})
    assert len(in_store) > 50  # the scan sees the store's own statements


@pytest.mark.parametrize(
    "code",
    [
        "store.db.execute('x')",
        "db.executemany(q, rows)",
        "c.executescript(s)",
        "q = 'SELECT id FROM photos'",
        "q = f'UPDATE photos SET path=NULL WHERE id={i}'",
        "q = 'DELETE FROM vectors'",
        "q = 'INSERT OR REPLACE INTO meta VALUES (?, ?)'",
        "q = 'PRAGMA data_version'",
        "q = 'SELECT c.photo_id ' 'FROM collections c'",
    ],
)
def test_the_sql_scan_finds_sql(code):
    assert sql_found({"x.py": ast.parse(code)}) != []


def test_the_sql_scan_leaves_prose_alone():
    prose = "'select the photos from a folder', 'update the index', 'delete it from disk', 'Where is it?'"
    assert sql_found({"x.py": ast.parse(prose)}) == []


ATOMIC_HOMES = ("indexer/atomic.py", "indexer/store/vectorfile.py")  # the atomic write; the append-only vectors
ATOMIC_NAMES = {"replace", "rename", "renames", "fsync", "fdatasync", "mkstemp", "NamedTemporaryFile"}


def atomic_primitives(trees: dict[str, ast.Module]) -> list[str]:
    """Calls, attribute reads and imports of os.replace/rename/fsync, tempfile.mkstemp/NamedTemporaryFile (and
    Path.replace/rename: the same rename). str.replace is told apart by its two arguments being strings."""
    found = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("os", "tempfile", "shutil"):
                found += [f"{rel}:{node.lineno}: import {a.name}" for a in node.names if a.name in ATOMIC_NAMES]
            if not (isinstance(node, ast.Attribute) and node.attr in ATOMIC_NAMES):
                continue
            base = ast.unparse(node.value)
            if base in ("os", "tempfile"):
                found.append(f"{rel}:{node.lineno}: {base}.{node.attr}")
            elif node.attr in ("replace", "rename") and not _str_replace(tree, node):
                found.append(f"{rel}:{node.lineno}: {base}.{node.attr}()")
    return found


def _str_replace(tree: ast.AST, attr: ast.Attribute) -> bool:
    """`text.replace("a", "b")`: a string edit, not a rename (a Path's replace/rename takes one argument)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.func is attr:
            return len(node.args) >= 2
    return True  # not called: a method reference such as `str.replace`


def test_atomic_write_primitives_live_only_in_atomic_py():
    """ARCHITECTURE.md: `indexer/atomic.py` is every atomic file write (the vector file appends on its own)."""
    assert atomic_primitives(sources(outside=ATOMIC_HOMES)) == []
    assert len(atomic_primitives({k: v for k, v in sources().items() if k in ATOMIC_HOMES})) >= 3


@pytest.mark.parametrize(
    "code",
    [
        "os.replace(a, b)",
        "os.rename(a, b)",
        "os.fsync(f.fileno())",
        "fd, tmp = tempfile.mkstemp(dir=d)",
        "tempfile.NamedTemporaryFile(dir=d)",
        "from os import fsync",
        "from tempfile import mkstemp",
        "tmp.replace(target)",
        "Path(tmp).rename(target)",
    ],
)
def test_the_atomic_scan_finds_primitives(code):
    assert atomic_primitives({"x.py": ast.parse(code)}) != []


def test_the_atomic_scan_leaves_string_edits_alone():
    assert atomic_primitives({"x.py": ast.parse("name.replace('-', '_')\ns = x.replace(old, new)")}) == []


# ---- packaging: one version, and a wheel that holds the whole tree ----------------------------------------------

FOLDER_PACKAGE = {"imgidx": "imgidx", "indexer": "imgidx.indexer", "search": "imgidx.search"}  # pyproject's map


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib: Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_is_the_installed_one():
    from importlib.metadata import version

    import imgidx
    from imgidx import _version

    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "imgidx._version.__version__"}
    assert imgidx.__version__ == _version.__version__ == version("imgidx")
    elsewhere = [
        f"{rel}:{node.lineno}"
        for rel, tree in sources(outside=("imgidx/_version.py",)).items()
        for node in ast.walk(tree)
        if (isinstance(node, ast.Assign) and "__version__" in [ast.unparse(t) for t in node.targets])
        or (isinstance(node, ast.Call) and ast.unparse(node).replace("'", '"').endswith('version("imgidx")'))
    ]
    assert elsewhere == []


def package_folders() -> dict[Path, str]:
    """Every folder of the tree that holds Python modules -> its package name."""
    return {
        py.parent: ".".join((package, *py.parent.relative_to(ROOT / folder).parts))
        for folder, package in FOLDER_PACKAGE.items()
        for py in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in py.parts
    }


def test_the_package_list_is_the_folder_tree():
    """A new sub-folder missing from pyproject's list would pass every test (they import the checkout) and be
    missing from the wheel; every file that is not Python must be package data."""
    setup = pyproject()["tool"]["setuptools"]
    assert sorted(setup["packages"]) == sorted(package_folders().values())
    assert {k: v for k, v in setup["package-dir"].items()} == {v: k for k, v in FOLDER_PACKAGE.items()}
    data, folders = setup["package-data"], package_folders()
    unpackaged = []
    for folder in FOLDER_PACKAGE:
        for path in (ROOT / folder).rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            home = max((f for f in folders if path.is_relative_to(f)), key=lambda f: len(f.parts))
            rel = path.relative_to(home).as_posix()
            if not any(fnmatch.fnmatch(rel, p) for p in data.get(folders[home], [])):
                unpackaged.append(str(path.relative_to(ROOT)))
    assert unpackaged == []


@pytest.mark.long
def test_the_wheel_holds_every_module_and_the_page(tmp_path):
    """The wheel built from the tracked files (pip, as a user's install builds it) lists every module of the tree."""
    import shutil
    import subprocess
    import sys
    import zipfile

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert "pyproject.toml" in files
    src = tmp_path / "src"
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("tests/", "bench/")):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "out").glob("imgidx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {
        "/".join((*FOLDER_PACKAGE[folder].split("."), *py.relative_to(ROOT / folder).parts))
        for folder in FOLDER_PACKAGE
        for py in (ROOT / folder).rglob("*")
        if py.is_file() and "__pycache__" not in py.parts
    }
    assert want - names == set()


# ---- one home layout: every path under a data home comes from indexer/layout.py ---------------------------------

HOME = re.compile(r"(?:Path\()?(?:\w+\.)?home\)?")  # home, store.home, self.home, Path(home) (not keras_home)
HOME_NAMES = ("imgidx.sqlite", "faiss.index", "vectors.bin", "build.lock", "cache/onnx", "demo-photos")


def home_paths(trees: dict[str, ast.Module]) -> list[str]:
    """`home / x`, os.path.join(home, ...), home.joinpath(...) and the layout's own file names."""
    found = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and HOME.fullmatch(ast.unparse(node.left)):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                call = ast.unparse(node.func)
                if (call == "os.path.join" and node.args and HOME.fullmatch(ast.unparse(node.args[0]))) or (
                    node.func.attr == "joinpath" and HOME.fullmatch(ast.unparse(node.func.value))
                ):
                    found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
        found += [
            f"{rel}:{line}: {text!r}" for line, text in strings(tree, code=True) if any(n in text for n in HOME_NAMES)
        ]
    return found


def test_home_paths_come_from_layout():
    """ARCHITECTURE.md: `indexer/layout.py` says where every file of a data home lives."""
    assert home_paths(sources(outside=("indexer/layout.py",))) == []
    assert len(home_paths({"indexer/layout.py": parsed()["indexer/layout.py"]})) >= 5


@pytest.mark.parametrize(
    "code",
    [
        'settings.home / "demo-photos"',
        'Path(store.home) / "classifiers"',
        "self.home / name",
        'os.path.join(home, "x")',
        'home.joinpath("x")',
        'p = "build.lock"',
    ],
)
def test_the_home_scan_finds_paths(code):
    assert home_paths({"x.py": ast.parse(code)}) != []


def test_the_home_scan_leaves_other_folders_alone():
    code = 'keras_home / "models"\nlayout.photos_folder(home) / "x"\nhome_page / "x"\n"""a build.lock"""'
    assert home_paths({"x.py": ast.parse(code)}) == []


# ---- library messages speak the library's words ------------------------------------------------------------------

FACE_FILES = ("imgidx/cli", "imgidx/service", "imgidx/__main__.py")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
EXTRA = re.compile(r"imgidx\[([\w,-]+)\]")


def cli_words(trees: dict[str, ast.Module], extras: set[str]) -> list[str]:
    """Strings of the code (not docstrings) that name a command-line flag, or an extra pyproject does not offer."""
    found = []
    for rel, tree in trees.items():
        for line, text in strings(tree, code=True):
            found += [f"{rel}:{line}: {flag}" for flag in FLAG.findall(text)]
            found += [
                f"{rel}:{line}: imgidx[{x}]" for m in EXTRA.findall(text) for x in m.split(",") if x not in extras
            ]
    return found


def test_library_messages_name_no_cli_flag_and_only_real_extras():
    """ARCHITECTURE.md: library messages never name CLI flags (the faces translate: cli/console.py adds the hints);
    an install hint names an extra that exists."""
    extras = set(pyproject()["project"]["optional-dependencies"])
    assert cli_words(sources(outside=FACE_FILES), extras) == []
    code = 'a = f"use --layer {x}"\nb = "pip install \'imgidx[parquet]\'"'
    assert sorted(cli_words({"x.py": ast.parse(code)}, extras)) == ["x.py:1: --layer", "x.py:2: imgidx[parquet]"]
    assert cli_words({"x.py": ast.parse('"""--layer in a docstring"""\nc = "a -- b, x--y, imgidx[ray]"')}, extras) == []


# ---- one thread-count owner ---------------------------------------------------------------------------------------

CPU_COUNTERS = ("indexer/threads.py", "indexer/flow.py", "indexer/engines/ray_cluster.py")  # model, decode, Ray


def cpu_counts(trees: dict[str, ast.Module]) -> list[str]:
    """os.cpu_count()/sched_getaffinity reads, and model thread settings not taken from threads.machine_threads."""
    found = []
    for rel, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("cpu_count", "sched_getaffinity"):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
            setting = isinstance(node, ast.Assign) and any("intra_op" in ast.unparse(t) for t in node.targets)
            if setting and "machine_threads" not in ast.unparse(node.value):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_model_thread_count_has_one_owner():
    """ARCHITECTURE.md: `indexer/threads.py` is the model thread count (decode threads and Ray count on their own)."""
    assert cpu_counts(sources(outside=CPU_COUNTERS)) == []
    code = "n = os.cpu_count() or 1\nso.intra_op_num_threads = 4\nok.intra_op_num_threads = machine_threads()"
    assert sorted(cpu_counts({"x.py": ast.parse(code)})) == [
        "x.py:1: os.cpu_count",
        "x.py:2: so.intra_op_num_threads = 4",
    ]


def test_every_retry_default_is_retry_retries():
    """Downloads, Flickr calls and the settings retry the same number of times unless told otherwise."""
    import inspect

    from imgidx.indexer import retry
    from imgidx.indexer.config import Settings
    from imgidx.indexer.fetch import Fetcher
    from imgidx.indexer.sources.flickr import FlickrClient
    from imgidx.indexer.sources.flickr_api import FlickrApi

    defaults = [inspect.signature(f).parameters["retries"].default for f in (Fetcher, FlickrClient, FlickrApi)]
    assert defaults + [Settings().retries] == [retry.RETRIES] * 4


def test_every_record_the_api_exports_is_frozen():
    """ARCHITECTURE.md: calls return frozen records; every one of them is a public name of `imgidx`."""
    import dataclasses

    import imgidx

    records = {n: getattr(imgidx, n) for n in imgidx.__all__ if dataclasses.is_dataclass(getattr(imgidx, n))}
    assert {"VerifyReport", "Duplicates", "ExportResult", "BuildReport", "Neighbour"} <= set(records)
    assert [n for n, r in records.items() if not r.__dataclass_params__.frozen] == []


# ---- the documents name files that exist --------------------------------------------------------------------------

SOURCE_PATH = re.compile(r"(?<![\w./-])((?:imgidx|indexer|search|tests|bench)/[\w/-]*\w\.py)\b")


def missing_paths(texts: dict[str, str]) -> list[str]:
    """Source files named in README/ARCHITECTURE/SECURITY or in a docstring or comment that are not in the tree."""
    return [
        f"{name}:{i}: {path}"
        for name, text in texts.items()
        for i, line in enumerate(text.splitlines(), 1)
        for path in SOURCE_PATH.findall(line)
        if not (ROOT / path).is_file()
    ]


def test_documents_and_docstrings_name_files_that_exist():
    docs = [ROOT / n for n in ("README.md", "ARCHITECTURE.md", "SECURITY.md") if (ROOT / n).exists()]
    code = [p for f in (*LIBRARY, "tests", "bench") for p in sorted((ROOT / f).rglob("*.py")) if p != Path(__file__)]
    assert missing_paths({str(p.relative_to(ROOT)): p.read_text() for p in docs + code}) == []
    assert missing_paths({"x.md": "see `imgidx/search/logistic.py` and search/api.py, not search/knn.py"}) == [
        "x.md:1: imgidx/search/logistic.py",
        "x.md:1: search/api.py",
    ]


# ---- VGG16 facts in vgg16.py -------------------------------------------------------------------------------------

VGG16_HOMES = ("indexer/embedders/vgg16.py", "indexer/embedders/__init__.py")  # the facts; the models' registry
VGG16_WORDS = {"vgg16", "fc2", "block5_pool"}
VGG16_NUMBERS = {224, 103.939, 116.779, 123.68}


def vgg16_facts(trees: dict[str, ast.Module]) -> list[str]:
    """The model's name, its layers, its input size and its caffe mean written out, and config importing it."""
    found = []
    for rel, tree in trees.items():
        prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for node in ast.walk(tree):
            value = node.value if isinstance(node, ast.Constant) and id(node) not in prose else None
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and value in VGG16_NUMBERS
            if number or (isinstance(value, str) and value in VGG16_WORDS):
                found.append(f"{rel}:{node.lineno}: {value!r}")
            if rel == "indexer/config.py" and isinstance(node, ast.ImportFrom) and "vgg16" in (node.module or ""):
                found.append(f"{rel}:{node.lineno}: imports {node.module}")
    return found


def test_vgg16_facts_live_in_vgg16_py():
    """ARCHITECTURE.md: `indexer/embedders/vgg16.py` holds every VGG16 fact; the rest of the library asks it (the
    faces' help texts may name the layers a user can choose)."""
    assert vgg16_facts(sources(outside=(*VGG16_HOMES, *FACE_FILES))) == []
    code = 'layer = "fc2"\nx = np.zeros((224, 224, 3))\nMEAN = (103.939, 116.779, 123.68)\n"""fc2 in prose"""'
    assert len(vgg16_facts({"x.py": ast.parse(code)})) == 6


# ---- no merge left half-done: a conflict marker once reached main's Makefile and broke `make` ----------------------
CONFLICT = re.compile(r"^(<{7}|>{7})( |$)|^={7}$", re.M)


def conflict_lines(text: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in CONFLICT.finditer(text)]


def test_no_tracked_file_holds_a_merge_conflict_marker():
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: no list of tracked files")
    found = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        found += [f"{name}:{line}" for line in conflict_lines(text)]
    assert not found, f"merge conflict markers: {found}"


def test_the_conflict_scan_finds_markers():
    marker = "<" * 7 + " HEAD\nours\n" + "=" * 7 + "\ntheirs\n" + ">" * 7 + " branch\n"
    assert conflict_lines("a\n" + marker) == [2, 4, 6]
    assert conflict_lines("# " + "=" * 7 + " a heading\n" + "=" * 20 + "\n") == []


# ---- Index is a thin face: the operations live in imgidx/ops/ -----------------------------------------------------
FACE_STATEMENTS = 8  # statements of a public Index method (its docstring aside, nested ones counted)
INDEX_OWN = {"exists", "embedder", "home"}  # the home's files, the model: what Index itself keeps
INDEX_PRIVATE = {"_reading", "_writing", "_embedder", "_model", "_classifiers"}  # store access and the model
INDEX_FUNCTIONS = {"open"}  # the module's one function besides the class


def thick_faces(tree: ast.Module) -> list[str]:
    """What makes index.py more than a documented face: a public method without a docstring (they are the API's
    documentation), of over FACE_STATEMENTS statements, one that does
    not call exactly one operation (`ops.NAME(...)`; `ops.check_*` argument checks aside), reads a Store's
    attribute or imports inside (the operations do that), a private helper beyond store access and the model, or
    a module function beyond `open`."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in INDEX_FUNCTIONS:
            found.append(f"{node.lineno}: function {node.name}")
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Index"]
    for fn in cls.body:
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name.startswith("__"):
            continue
        if fn.name.startswith("_"):
            if fn.name not in INDEX_PRIVATE:
                found.append(f"{fn.lineno}: private {fn.name}")
            continue
        if not ast.get_docstring(fn):  # the docstrings are the API's documentation
            found.append(f"{fn.lineno}: {fn.name} has no docstring")
        body = fn.body[1:] if ast.get_docstring(fn) else fn.body
        statements = [s for b in body for s in ast.walk(b) if isinstance(s, ast.stmt)]
        calls = [
            ast.unparse(c.func)
            for b in body
            for c in ast.walk(b)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and ast.unparse(c.func.value) == "ops"
        ]
        operations = [c for c in calls if not c.startswith("ops.check_")]
        if len(statements) > FACE_STATEMENTS:
            found.append(f"{fn.lineno}: {fn.name} has {len(statements)} statements")
        if fn.name not in INDEX_OWN and len(operations) != 1:
            found.append(f"{fn.lineno}: {fn.name} calls {operations or 'no operation'}")
        for s in statements:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                found.append(f"{s.lineno}: {fn.name} imports {ast.unparse(s)}")
        for a in (a for b in body for a in ast.walk(b) if isinstance(a, ast.Attribute)):
            if isinstance(a.value, ast.Name) and a.value.id == "store":
                found.append(f"{a.lineno}: {fn.name} reads store.{a.attr}")
    return found


def test_index_is_a_thin_face_over_the_operations():
    """ARCHITECTURE.md: each public `Index` method checks what users pass, opens the store, calls one operation of
    imgidx.ops and returns; the operations themselves live in imgidx/ops/, once each."""
    tree = parsed()["imgidx/index.py"]
    assert thick_faces(tree) == []
    from imgidx import Index

    public = {n for n in vars(Index) if not n.startswith("_")}
    assert len(public - INDEX_OWN) >= 20  # the scan reads the methods users call


def test_the_face_scan_finds_operation_bodies():
    code = '''
class Index:
    def info(self):
        """doc"""
        with self._reading() as store:
            counts = store.counts()
            return counts
    def clean(self, c):
        from imgidx.search import outliers
        with self._writing() as store:
            report = ops.clean_report(store, c)
            ops.apply_clean(store, report)
            return report
    def long(self):
        with self._reading() as store:
            a = 1
            b = 2
            c = 3
            d = 4
            e = 5
            f = 6
            g = 7
            return ops.x(store)
    def ok(self, kind):
        """A face: checks, opens, calls one operation."""
        ops.check_kind(kind)
        with self._reading() as store:
            return ops.reindex(store, kind)
    def _peek(self):
        pass
def _pixels(photo):
    pass
'''
    assert thick_faces(ast.parse(code)) == [
        "31: function _pixels",
        "3: info calls no operation",
        "6: info reads store.counts",
        "8: clean has no docstring",
        "8: clean calls ['ops.clean_report', 'ops.apply_clean']",
        "9: clean imports from imgidx.search import outliers",
        "14: long has no docstring",
        "14: long has 9 statements",
        "29: private _peek",
    ]


WRITE_HOMES = ("indexer", "imgidx/ops")  # the build's pipeline and verify's repair; the operations
STORE_CLASSES = ("Store", "Checks", "Catalog")  # the Store and what it inherits (its files are its own business)


def store_writers() -> set[str]:
    """The Store's public methods that change an index: a `self.transaction()`, a save or rebuild of the FAISS
    index, a file removed, or a call of another such method (read from indexer/store/, to a fixed point)."""
    bodies: dict[str, str] = {}
    for rel, tree in sources().items():
        if rel.startswith("indexer/store/"):
            for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in STORE_CLASSES):
                for fn in (f for f in cls.body if isinstance(f, ast.FunctionDef)):
                    bodies[fn.name] = bodies.get(fn.name, "") + ast.unparse(fn)
    writes = {
        n for n, b in bodies.items() if re.search(r"self\.transaction\(\)|self\.faiss\.(save|rebuild)\(|\.unlink\(", b)
    }
    while more := {n for n, b in bodies.items() if any(f"self.{w}(" in b for w in writes)} - writes:
        writes |= more
    return {w for w in writes if not w.startswith("_")}


def store_writes(trees: dict[str, ast.Module], writers: set[str]) -> list[str]:
    return [
        f"{rel}:{node.lineno}: {ast.unparse(node.func)}"
        for rel, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in writers
    ]


def test_every_change_to_an_index_is_an_operation():
    """ARCHITECTURE.md: outside indexer/ (the build's pipeline, verify's repair), only imgidx/ops/ calls a Store
    method that writes: Index, the faces and search/ change an index through an operation."""
    writers = store_writers()
    assert {"set_flags", "add_reviews", "save_predictions", "set_meta", "rebuild_index", "add_photos"} <= writers
    assert not {"vectors", "photo_rows", "reviews", "search", "meta", "counts"} & writers  # readers are not
    assert store_writes(sources(outside=WRITE_HOMES), writers) == []
    assert len(store_writes({k: v for k, v in sources().items() if k.startswith("imgidx/ops/")}, writers)) >= 10
    sample = "with idx._writing() as store:\n    store.set_flags(c, info, ids)\nlabels.index(x)"
    assert store_writes({"x.py": ast.parse(sample)}, writers) == ["x.py:2: store.set_flags"]
