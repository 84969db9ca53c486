"""Docs that cannot drift: design.md's graph listings are today's graphs, and the README's layout
section names what the tree holds."""

import difflib
import fnmatch
import importlib.util
import os
import re
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name: str):
    path = os.path.join(ROOT, "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_design_listings_are_todays_graphs():
    listings = _script("design_listings")
    if not torch.__version__.startswith(listings.LISTINGS_TORCH):
        pytest.skip(f"the listings are torch {listings.LISTINGS_TORCH}'s printout")
    with open(listings.DESIGN, encoding="utf-8") as f:
        text = f.read()
    rendered = listings.render(text, listings.listings())
    diff = "\n".join(list(difflib.unified_diff(text.splitlines(), rendered.splitlines(),
                                               "docs/design.md", "regenerated", lineterm=""))[:30])
    assert rendered == text, ("docs/design.md's graph listings differ from today's graphs: run "
                              "`PYTHONPATH=$PWD python scripts/design_listings.py` and commit\n"
                              + diff)


def test_design_listings_render_only_between_their_markers():
    listings = _script("design_listings")
    text = "a\n<!-- listing:x -->\nold\n<!-- /listing:x -->\nb\n"
    rendered = listings.render(text, {"x": "new\n"})
    assert rendered == "a\n<!-- listing:x -->\nnew\n<!-- /listing:x -->\nb\n"
    with pytest.raises(KeyError, match="no markers"):
        listings.render(text, {"x": "new\n", "y": "more\n"})


def _layout() -> dict[str, str]:
    """README's layout block: entry folder -> its text."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    folder = None
    for line in block.splitlines():
        match = re.match(r"^(\S+/)\s+(.*)$", line)
        if match:
            folder = match.group(1)
            entries[folder] = match.group(2)
        elif folder is not None:
            entries[folder] += " " + line.strip()
    return entries


def _exists(folder: str, name: str) -> bool:
    """`name` under the entry's folder, or (`docs/design.md`, `benchmarks/`) under the root."""
    for base in (os.path.join(ROOT, folder), ROOT):
        head, pattern = os.path.split(os.path.join(base, name.rstrip("/")))
        if os.path.isdir(head) and any(fnmatch.fnmatch(e, pattern) for e in os.listdir(head)):
            return True
    return False


def test_readme_layout_names_only_paths_that_exist():
    entries = _layout()
    assert {"ts_compile/", "ts_compile/passes/", "tests/", "docs/"} <= set(entries)
    missing = []
    for folder, text in entries.items():
        assert os.path.isdir(os.path.join(ROOT, folder)), folder
        names = re.findall(r"(?<![\w./-])([\w*]+(?:/[\w*]+)*(?:\.py|\.md|\.sh|/(?=[\s,)]|$)))", text)
        for name in names:
            if not _exists(folder, name):
                missing.append(f"{folder}{name}")
    assert not missing, f"README's layout names paths that do not exist: {missing}"


def test_readme_layout_names_every_module_of_the_package():
    entries = _layout()
    unnamed = []
    for folder, _, files in os.walk(os.path.join(ROOT, "ts_compile")):
        relative = os.path.relpath(folder, ROOT).replace(os.sep, "/") + "/"
        if "__pycache__" in relative:
            continue
        text = entries.get(relative, "")
        for name in files:
            if name.endswith(".py") and name != "__init__.py" and not re.search(
                    rf"(?<![\w.]){re.escape(name)}", text):
                unnamed.append(relative + name)
    assert not unnamed, f"README's layout does not name: {unnamed}"


def test_package_picture_reads_internal_imports_from_the_ast(tmp_path):
    picture = _script("package_picture")
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import f\n",
        "a.py": "import os\nimport pkg.b\nfrom . import c\n",
        "b.py": "def g():\n    from .sub import d\n",
        "c.py": "from pkg.a import f\n",  # a -> c -> a: a cycle
        "sub/__init__.py": "",
        "sub/d.py": "from .. import sub\nfrom . import e\nfrom torch import nn\n",
        "sub/e.py": "",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    modules = picture.find_modules(str(tmp_path), "pkg")
    assert set(modules) == {"__init__", "a", "b", "c", "sub", "sub.d", "sub.e"}
    imports = {(i.source, i.target): i.lazy for i in picture.find_imports(modules, "pkg")}
    assert imports == {("__init__", "a"): False, ("a", "b"): False, ("a", "c"): False,
                       ("b", "sub.d"): True, ("c", "a"): False, ("sub.d", "sub"): False,
                       ("sub.d", "sub.e"): False}
    level, back = picture.levels(modules, picture.find_imports(modules, "pkg"))
    assert len(back) == 1 and back <= {("a", "c"), ("c", "a")}
    assert level["sub.e"] == 0 and level["a"] > level["b"] > level["sub.d"] > level["sub.e"]
    out = tmp_path / "picture.png"
    assert picture.main([str(tmp_path), str(out), "--package", "pkg"]) == 0
    from PIL import Image

    with Image.open(out) as image:
        assert image.size[0] > 400 and image.size[1] > 200
