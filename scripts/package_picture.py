"""Draw a package's modules and their internal imports, grouped by subpackage, as a PNG.

    python scripts/package_picture.py SOURCE_DIR OUTPUT.png [--package ts_compile] [--title T]

SOURCE_DIR holds the package folder (a checkout's root, or a `git archive` of an old commit):

    git archive c84ad5d ts_compile | tar -x -C /tmp/before
    python scripts/package_picture.py /tmp/before docs/img/package_before.png --title "before"
    python scripts/package_picture.py . docs/img/package_after.png --title "after"

Imports are read from the AST (nothing is imported or run), internal ones only: `import
ts_compile.x`, `from ts_compile.x import y`, `from .x import y`, `from . import x`; a name that is a
submodule counts as that module. Layout: one horizontal band per subpackage (the package's own
modules first), one column per dependency level (a module sits left of everything it imports;
modules importing nothing internal on the right). An arrow runs from importer to imported, in the
importer's band colour; dashed when the import is inside a function (loaded on first use). An
import that closes a cycle is drawn in black, thicker.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import sys
from collections import defaultdict

from PIL import Image, ImageDraw, ImageFont

BAND_COLOURS = [(231, 238, 250), (234, 246, 234), (252, 240, 226), (243, 234, 248),
                (250, 232, 236), (232, 246, 246), (246, 246, 228)]
EDGE_COLOURS = [(52, 101, 164), (56, 142, 60), (214, 120, 20), (123, 73, 160),
                (196, 48, 82), (32, 140, 140), (140, 140, 30)]
# Fixed per subpackage, so a before and an after picture colour the same band alike.
GROUP_ORDER = ("", "passes", "analysis", "integrations", "cli")
CYCLE = (0, 0, 0)
BLACK, GREY, WHITE = (20, 20, 20), (120, 120, 120), (255, 255, 255)
BOX_H, ROW_GAP, COL_GAP, MARGIN, BAND_PAD, LABEL_W = 22, 8, 70, 20, 10, 120
FONT_SIZE = 13


@dataclasses.dataclass(frozen=True)
class Module:
    name: str  # "backend", "passes.find_regions", "passes" for passes/__init__.py
    group: str  # "" for the package's own modules, else the subpackage
    path: str
    folder: tuple[str, ...]  # the (sub)package it is in, relative to the package


@dataclasses.dataclass(frozen=True)
class Import:
    source: str
    target: str
    lazy: bool  # inside a function: loaded on first use


def find_modules(root: str, package: str) -> dict[str, Module]:
    """Every .py file under `root/package`, by dotted name relative to the package."""
    modules = {}
    base = os.path.join(root, package)
    if not os.path.isdir(base):
        raise SystemExit(f"no folder {base}: pass the directory that holds {package}/")
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(folder, base)
        parts = [] if relative == "." else relative.split(os.sep)
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            stem = file[:-3]
            dotted = ".".join(parts + ([] if stem == "__init__" else [stem])) or "__init__"
            modules[dotted] = Module(dotted, parts[0] if parts else "", os.path.join(folder, file),
                                     tuple(parts))
    return modules


def _resolve(module: Module, node: ast.ImportFrom | ast.Import, package: str,
             modules: dict[str, Module]) -> list[str]:
    """The internal modules one import statement names."""
    here = list(module.folder)
    found = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == package or alias.name.startswith(package + "."):
                found.append(alias.name[len(package) + 1:])
        return [f for f in found if f in modules]
    if node.level:
        up = here[:len(here) - (node.level - 1)] if node.level > 1 else here
        base = ".".join(up + ([node.module] if node.module else []))
    elif node.module and (node.module == package or node.module.startswith(package + ".")):
        base = node.module[len(package) + 1:]
    else:
        return []
    for alias in node.names:
        submodule = f"{base}.{alias.name}".lstrip(".")
        if submodule in modules:
            found.append(submodule)
        elif base in modules:
            found.append(base)
    return found


def find_imports(modules: dict[str, Module], package: str) -> list[Import]:
    imports: dict[tuple[str, str], bool] = {}
    for module in modules.values():
        with open(module.path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), module.path)
        lazy_nodes = {id(n) for fn in ast.walk(tree)
                      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for n in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node, package, modules):
                    if target != module.name:
                        key = (module.name, target)
                        imports[key] = imports.get(key, True) and id(node) in lazy_nodes
    return [Import(s, t, lazy) for (s, t), lazy in sorted(imports.items())]


def levels(modules: dict[str, Module], imports: list[Import]) -> tuple[dict[str, int], set]:
    """Column of each module (0 = imports nothing internal) and the imports that close a cycle."""
    deps = defaultdict(list)
    for imp in imports:
        deps[imp.source].append(imp.target)
    level: dict[str, int] = {}
    on_path: set[str] = set()
    back: set[tuple[str, str]] = set()

    def visit(name: str) -> int:
        if name in level:
            return level[name]
        on_path.add(name)
        deepest = -1
        for target in sorted(deps[name]):
            if target in on_path:
                back.add((name, target))
                continue
            deepest = max(deepest, visit(target))
        on_path.discard(name)
        level[name] = deepest + 1
        return level[name]

    for name in sorted(modules):
        visit(name)
    return level, back


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType's sized default
        return ImageFont.load_default()


def _text_w(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left


def _bezier(p0, p3, bend: float = 0.45, steps: int = 40) -> list[tuple[float, float]]:
    dx = (p3[0] - p0[0]) * bend
    p1, p2 = (p0[0] + dx, p0[1]), (p3[0] - dx, p3[1])
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
                       a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return points


def _polyline(draw, points, colour, width: int, dashed: bool) -> None:
    for i, (a, b) in enumerate(zip(points, points[1:])):
        if not dashed or i % 2 == 0:
            draw.line([a, b], fill=colour, width=width)


def _arrow_head(draw, tip, before, colour) -> None:
    angle = math.atan2(tip[1] - before[1], tip[0] - before[0])
    wing = [(tip[0] - 8 * math.cos(angle + s * 0.45), tip[1] - 8 * math.sin(angle + s * 0.45))
            for s in (-1, 1)]
    draw.polygon([tip, *wing], fill=colour)


def draw_picture(modules: dict[str, Module], imports: list[Import], title: str) -> Image.Image:
    font, title_font = _font(), _font(FONT_SIZE + 5)
    level, back = levels(modules, imports)
    present = {m.group for m in modules.values()}
    groups = [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))
    columns = max(level.values(), default=0) + 1
    labels = {name: name.split(".")[-1] + ("/" if _is_package(modules[name]) and name != "__init__"
                                           else "") for name in modules}
    box_w = max(_text_w(font, label) for label in labels.values()) + 12
    # cells: (group, level) -> modules, stacked vertically in the band
    cells: dict[tuple[str, int], list[str]] = defaultdict(list)
    for name in sorted(modules):
        cells[(modules[name].group, level[name])].append(name)
    band_rows = {g: max((len(cells[(g, c)]) for c in range(columns)), default=1) for g in groups}
    top = MARGIN + 60
    band_top, y = {}, top
    for g in groups:
        band_top[g] = y
        y += band_rows[g] * (BOX_H + ROW_GAP) + 2 * BAND_PAD
    height = y + MARGIN + 24
    width = MARGIN * 2 + LABEL_W + columns * (box_w + COL_GAP)
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)

    def x_of(col: int) -> int:  # level 0 on the right
        return MARGIN + LABEL_W + (columns - 1 - col) * (box_w + COL_GAP) + COL_GAP // 2

    box = {}
    for gi, g in enumerate(groups):
        colour = BAND_COLOURS[gi % len(BAND_COLOURS)]
        y0 = band_top[g]
        y1 = y0 + band_rows[g] * (BOX_H + ROW_GAP) + 2 * BAND_PAD - ROW_GAP
        draw.rectangle([MARGIN, y0, width - MARGIN, y1], fill=colour)
        draw.text((MARGIN + 6, y0 + 6), (g + "/") if g else "(package)", fill=BLACK, font=font)
        for c in range(columns):
            for r, name in enumerate(cells[(g, c)]):
                bx, by = x_of(c), y0 + BAND_PAD + r * (BOX_H + ROW_GAP)
                box[name] = (bx, by, bx + box_w, by + BOX_H)

    group_index = {g: i for i, g in enumerate(groups)}
    for imp in imports:
        s, t = box[imp.source], box[imp.target]
        start, end = (s[2], (s[1] + s[3]) / 2), (t[0], (t[1] + t[3]) / 2)
        colour = (CYCLE if (imp.source, imp.target) in back
                  else EDGE_COLOURS[group_index[modules[imp.source].group] % len(EDGE_COLOURS)])
        if end[0] <= start[0]:  # a cycle's back edge: loop under the boxes
            start, end = (s[0], s[3]), (t[2], t[3])
        points = _bezier(start, end)
        _polyline(draw, points, colour, 2 if colour == CYCLE else 1, imp.lazy)
        _arrow_head(draw, end, points[-3], colour)

    for name, (x0, y0, x1, y1) in box.items():
        draw.rectangle([x0, y0, x1, y1], fill=WHITE, outline=GREY)
        draw.text((x0 + 6, y0 + 4), labels[name], fill=BLACK, font=font)

    lazy = sum(i.lazy for i in imports)
    draw.text((MARGIN, MARGIN), title, fill=BLACK, font=title_font)
    draw.text((MARGIN, MARGIN + 28),
              f"{len(modules)} modules, {len(imports)} internal imports ({lazy} inside functions, "
              f"dashed), {len(back)} closing a cycle (black). An arrow runs from importer to "
              "imported; columns: a module sits left of all it imports.",
              fill=GREY, font=font)
    return image


def _is_package(module: Module) -> bool:
    return module.path.endswith("__init__.py")


def summary(modules: dict[str, Module], imports: list[Import]) -> str:
    per_group = defaultdict(int)
    for m in modules.values():
        per_group[m.group or "(package)"] += 1
    crossing = sum(modules[i.source].group != modules[i.target].group for i in imports)
    _, back = levels(modules, imports)
    groups = ", ".join(f"{g}: {n}" for g, n in sorted(per_group.items()))
    return (f"{len(modules)} modules ({groups}); {len(imports)} imports, {crossing} across "
            f"subpackages, {sum(i.lazy for i in imports)} inside functions, {len(back)} closing "
            "a cycle")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the directory that holds the package folder")
    parser.add_argument("output", help="the PNG to write")
    parser.add_argument("--package", default="ts_compile", help="the package folder (ts_compile)")
    parser.add_argument("--title", help="the picture's title (default: the source directory)")
    args = parser.parse_args(argv)
    modules = find_modules(args.source, args.package)
    imports = find_imports(modules, args.package)
    image = draw_picture(modules, imports, args.title or os.path.abspath(args.source))
    image.save(args.output)
    print(f"{args.output}: {summary(modules, imports)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
