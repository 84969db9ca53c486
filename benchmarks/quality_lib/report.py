"""Tables (tabulate), the Fréchet-distance-vs-speedup figure and sample grids (PIL, no matplotlib)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .metrics import mean_std

GROUP_ORDER = {"full": 0, "fora": 1, "taylorseer": 2, "official": 3, "steps": 4, "diffusers": 5,
               "time": 6, "warmup": 7, "forecaster": 8, "adaptive": 9}


def _fmt(m: float, s: float, digits: int = 2) -> str:
    if math.isinf(m):
        return "inf"
    if math.isnan(m):
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s == s else f"{m:.{digits}f}"


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in ("fd", "acc", "psnr", "ssim", "rel_l2", "seconds"):
        out[key] = mean_std([p[key] for p in result["per_seed"]])
    return out


def table(results: dict[str, Any], methods: tuple[str, ...] | None = None,
          cut: str | None = None) -> str:
    from tabulate import tabulate

    rows = results["rows"]
    full_fd = _full_fd(rows)
    lines = []
    for rid, r in rows.items():
        if "error" in r:
            continue
        row = r["row"]
        if methods and row["method"] not in methods:
            continue
        if cut and row["cut"] not in (None, cut):
            continue
        s = summarize(r)
        label = rid + ("" if r["schedule_ok"] else " (schedule mismatch!)")
        lines.append((GROUP_ORDER.get(row["method"], 9), -r["flops_speedup"] if False else 0, [
            label, row["cut"] or "-", row["interval"] or "-", "-" if row["order"] is None
            else row["order"], _computed(r), f"{r['flops_speedup']:.2f}x",
            _fmt(*s["fd"]), _delta(r, full_fd), _fmt(s["acc"][0] * 100,
                                                                 s["acc"][1] * 100, 1),
            _fmt(*s["psnr"], 1), _fmt(*s["ssim"], 3), f"{s['rel_l2'][0]:.3f}",
            f"{s['seconds'][0]:.1f}"]))
    lines.sort(key=lambda t: (t[0],))
    headers = ["row", "cut", "N", "order", "computed", "FLOPs speedup", "FD (mean ± sd)",
               "ΔFD vs full (paired)", "class acc %", "PSNR dB", "SSIM", "rel L2", "s / gen"]
    return tabulate([t[2] for t in lines], headers=headers, tablefmt="github",
                    disable_numparse=True)


def _computed(r: dict[str, Any]) -> str:
    """Computed steps / steps; an adaptive row's is a mean over seeds (with its range)."""
    c, steps = r["computed"], r["row"]["steps"]
    if isinstance(c, int):
        return f"{c}/{steps}"
    per_seed = r.get("computed_per_seed") or [c]
    return f"{c:.1f}/{steps} ({min(per_seed)}-{max(per_seed)})"


def study_table(results: dict[str, Any]) -> str:
    """The forecasters-and-adaptive study, by FLOPs speedup (equal-FLOPs rows side by side)."""
    from tabulate import tabulate

    rows = results["rows"]
    full_fd = _full_fd(rows)
    lines = []
    for rid, r in rows.items():
        if "error" in r:
            continue
        row, s = r["row"], summarize(r)
        adaptive = row.get("adaptive")
        if adaptive:
            schedule = (f"tol {adaptive['tolerance']:g}, min {adaptive['min_interval']}, "
                        f"max {adaptive['max_interval']}")
        else:
            schedule = f"N {row['interval']}, w {row['warmup']}" if row["interval"] else "-"
        label = rid + ("" if r["schedule_ok"] else " (schedule mismatch!)")
        lines.append((r["flops_speedup"], [
            label, row.get("forecaster") or "-", "-" if row["order"] is None else row["order"],
            schedule, _computed(r), f"{r['flops_speedup']:.2f}x", _fmt(*s["psnr"], 1),
            _fmt(*s["ssim"], 3), f"{s['rel_l2'][0]:.3f}", _fmt(*s["fd"]), _delta(r, full_fd)]))
    lines.sort(key=lambda t: t[0])
    headers = ["row", "forecaster", "order", "schedule", "computed", "FLOPs speedup", "PSNR dB",
               "SSIM", "rel L2", "FD (mean ± sd)", "ΔFD vs full (paired)"]
    return tabulate([t[1] for t in lines], headers=headers, tablefmt="github",
                    disable_numparse=True)


STUDY_COLORS = {"fewer steps": (127, 127, 127), "FORA": (214, 39, 40),
                "taylor": (255, 127, 14), "hermite": (44, 160, 44), "newton": (31, 119, 180),
                "adaptive taylor": (255, 127, 14), "adaptive hermite": (44, 160, 44),
                "adaptive newton": (31, 119, 180), "adaptive taylor o1": (140, 86, 75),
                "adaptive taylor min5": (148, 103, 189),
                "adaptive taylor o1 min5": (227, 119, 194)}


def _study_series(results: dict[str, Any], metric: str) -> dict[str, list[tuple[float, float]]]:
    """Per series, (FLOPs speedup, metric mean): fixed order-2 rows over N, adaptive rows over
    tolerances (order 2, order 1 and each min_interval apart), fewer steps; full compute is not
    drawn (PSNR inf), nor are adaptive tolerances that computed every step."""
    series: dict[str, list[tuple[float, float]]] = {}
    for rid, r in results["rows"].items():
        if "error" in r:
            continue
        row = r["row"]
        value = summarize(r)[metric][0]
        if math.isinf(value):
            continue
        pt = (r["flops_speedup"], value)
        if pt[0] < 1.01:  # an adaptive tolerance that computed every step: full compute
            continue
        if row["method"] == "steps":
            series.setdefault("fewer steps", []).append(pt)
        elif row["method"] == "forecaster" and row["order"] == 0:
            series.setdefault("FORA", []).append(pt)
        elif row["method"] == "forecaster" and row["order"] == 2:
            series.setdefault(row["forecaster"], []).append(pt)
        elif row["method"] == "adaptive":
            order = "" if row["order"] == 2 else f" o{row['order']}"
            low = row["adaptive"]["min_interval"]
            bounded = "" if low == 1 else f" min{low}"
            series.setdefault(f"adaptive {row['forecaster']}{order}{bounded}", []).append(pt)
    return {k: sorted(v) for k, v in series.items()}


def _best_per_speedup(points: list[tuple[float, float]], higher: bool
                      ) -> list[tuple[float, float]]:
    """A series' line: its best value at each FLOPs speedup (several adaptive tolerances can
    compute the same steps' count: one marker each, one point on the line)."""
    best: dict[float, float] = {}
    for x, y in points:
        key = round(x, 2)
        if key not in best or (y > best[key] if higher else y < best[key]):
            best[key] = y
    return sorted(best.items())


def pareto_figure(results: dict[str, Any], path: str, title: str) -> None:
    """Two panels, quality against FLOPs speedup: PSNR vs full compute (higher is better) and
    Fréchet distance to real digits (lower is better). Fixed schedules: circles on solid lines;
    adaptive: squares on dashed lines through each speedup's best tolerance; fewer steps: grey
    dashes."""
    from PIL import Image, ImageDraw

    panels = [("psnr", "PSNR vs full compute, dB (higher = better)"),
              ("fd", "Frechet distance (lower = better)")]
    all_series = {m: _study_series(results, m) for m, _ in panels}
    pts = [p for s in all_series.values() for v in s.values() for p in v]
    if not pts:
        return
    xlo, xhi = min(p[0] for p in pts) * 0.95, max(p[0] for p in pts) * 1.03
    W, H, L, R, T, B = 520, 420, 62, 18, 40, 50
    img = Image.new("RGB", (2 * W, H + 100), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    d.text((10, 6), title, fill="black", font=font)
    for i, (metric, label) in enumerate(panels):
        series = all_series[metric]
        ys = [p[1] for v in series.values() for p in v]
        ylo, yhi = min(ys), max(ys)
        pad = 0.05 * max(yhi - ylo, 1e-6)
        ylo, yhi = ylo - pad, yhi + pad
        ox = i * W
        x0, x1, y0, y1 = ox + L, ox + W - R, T + 12, H - B + 12
        sx = lambda v: x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)  # noqa: E731
        sy = lambda v: y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)  # noqa: E731
        for t in _nice_ticks(xlo, xhi):
            d.line([(sx(t), y0), (sx(t), y1)], fill=(235, 235, 235))
            d.text((sx(t) - 8, y1 + 6), f"{t:g}", fill="black", font=small)
        for t in _nice_ticks(ylo, yhi):
            d.line([(x0, sy(t)), (x1, sy(t))], fill=(235, 235, 235))
            d.text((ox + 4, sy(t) - 7), f"{t:g}", fill="black", font=small)
        d.rectangle([x0, y0, x1, y1], outline="black")
        d.text(((x0 + x1) / 2 - 60, y1 + 24), "FLOPs speedup (x)", fill="black", font=small)
        d.text((ox + 4, y0 - 16), label, fill="black", font=small)
        for name, p in series.items():
            color = STUDY_COLORS.get(name, (0, 0, 0))
            xy = [(sx(a), sy(b)) for a, b in p]
            line = [(sx(a), sy(b)) for a, b in _best_per_speedup(p, higher=metric == "psnr")]
            dashed = name == "fewer steps" or name.startswith("adaptive")
            for a, b in zip(line, line[1:]):
                if dashed:
                    _dashed(d, a, b, color)
                else:
                    d.line([a, b], fill=color, width=2)
            for a, b in xy:
                if name.startswith("adaptive"):
                    d.rectangle([a - 4, b - 4, a + 4, b + 4], fill=color)
                else:
                    d.ellipse([a - 4, b - 4, a + 4, b + 4], fill=color)
    lx, ly = 20, H + 30
    for k, name in enumerate(STUDY_COLORS):
        x, y = lx + (k % 4) * 250, ly + (k // 4) * 22
        color = STUDY_COLORS[name]
        if name == "fewer steps" or name.startswith("adaptive"):
            _dashed(d, (x, y + 7), (x + 30, y + 7), color)
            d.rectangle([x + 11, y + 3, x + 19, y + 11], fill=color)
        else:
            d.line([(x, y + 7), (x + 30, y + 7)], fill=color, width=2)
            d.ellipse([x + 11, y + 3, x + 19, y + 11], fill=color)
        d.text((x + 36, y), name, fill="black", font=small)
    img.save(path)


def _full_fd(rows: dict[str, Any]) -> dict[int, float]:
    """Full compute's FD per seed (what the ΔFD column pairs each row with)."""
    full = rows.get("full")
    return {p["seed"]: p["fd"] for p in full["per_seed"]} if full and "per_seed" in full else {}


def _delta(r: dict[str, Any], full_fd: dict[int, float]) -> str:
    """FD(row) - FD(full) per seed (same noise, same labels), mean ± sd over seeds."""
    d = [p["fd"] - full_fd[p["seed"]] for p in r["per_seed"] if p["seed"] in full_fd]
    if not d:
        return "-"
    m, sd = mean_std(d)
    return f"{m:+.2f} ± {sd:.2f}"


# --- PNGs ----------------------------------------------------------------------------------------

COLORS = {"full": (0, 0, 0), "FORA (o0)": (214, 39, 40), "TaylorSeer o1": (255, 127, 14),
          "TaylorSeer o2": (44, 160, 44), "TaylorSeer o3": (31, 119, 180),
          "TaylorSeer o4": (148, 103, 189), "fewer steps": (127, 127, 127),
          "diffusers default": (140, 86, 75)}


def _series(results: dict[str, Any], cut: str) -> dict[str, list[tuple[float, float]]]:
    rows = results["rows"]
    series: dict[str, list[tuple[float, float]]] = {}
    for rid, r in rows.items():
        if "error" in r:
            continue
        row = r["row"]
        fd = summarize(r)["fd"][0]
        pt = (r["flops_speedup"], fd)
        if row["method"] == "full":
            series.setdefault("full", []).append(pt)
            for name in ("FORA (o0)", "TaylorSeer o1", "TaylorSeer o2", "TaylorSeer o3",
                         "TaylorSeer o4", "fewer steps"):
                series.setdefault(name, []).append(pt)
        elif row["method"] == "steps":
            series.setdefault("fewer steps", []).append(pt)
        elif row["method"] in ("fora", "taylorseer") and row["cut"] == cut:
            name = "FORA (o0)" if row["order"] == 0 else f"TaylorSeer o{row['order']}"
            series.setdefault(name, []).append(pt)
        elif row["method"] == "diffusers" and rid == "diffusers-default" and cut == "paper":
            series.setdefault("diffusers default", []).append(pt)
    return {k: sorted(v) for k, v in series.items()}


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = max(hi - lo, 1e-9)
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            ticks.append(round(v, 10))
        v += step
    return ticks


def _dashed(draw, p, q, color, width=2, dash=6):
    (x0, y0), (x1, y1) = p, q
    length = math.hypot(x1 - x0, y1 - y0)
    k = 0.0
    while k < length:
        a, b = k / length, min(k + dash, length) / length
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                   (x0 + b * (x1 - x0), y0 + b * (y1 - y0))], fill=color, width=width)
        k += 2 * dash


def figure(results: dict[str, Any], path: str, title: str) -> None:
    """Two panels (cut='block', cut='paper'): Fréchet distance against FLOPs speedup."""
    from PIL import Image, ImageDraw

    panels = [("block", _series(results, "block")), ("paper", _series(results, "paper"))]
    pts = [p for _, s in panels for v in s.values() for p in v]
    if not pts:
        return
    xmax = max(p[0] for p in pts) * 1.05
    ys = [p[1] for p in pts]
    ylo, yhi = min(ys), max(ys)
    pad = 0.05 * max(yhi - ylo, 1e-6)
    ylo, yhi = max(0.0, ylo - pad), yhi + pad
    W, H, L, R, T, B = 520, 420, 62, 18, 40, 50
    img = Image.new("RGB", (2 * W, H + 120), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    d.text((10, 6), title, fill="black", font=font)
    xt = _nice_ticks(1.0, xmax)
    yt = _nice_ticks(ylo, yhi)
    for i, (cut, series) in enumerate(panels):
        ox = i * W
        x0, x1, y0, y1 = ox + L, ox + W - R, T + 12, H - B + 12
        sx = lambda v: x0 + (v - 1.0) / (xmax - 1.0) * (x1 - x0)  # noqa: E731
        sy = lambda v: y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)  # noqa: E731
        d.rectangle([x0, y0, x1, y1], outline="black")
        for t in xt:
            d.line([(sx(t), y1), (sx(t), y1 + 4)], fill="black")
            d.line([(sx(t), y0), (sx(t), y1)], fill=(235, 235, 235))
            d.text((sx(t) - 8, y1 + 6), f"{t:g}", fill="black", font=small)
        for t in yt:
            d.line([(x0 - 4, sy(t)), (x0, sy(t))], fill="black")
            d.line([(x0, sy(t)), (x1, sy(t))], fill=(235, 235, 235))
            d.text((ox + 4, sy(t) - 7), f"{t:g}", fill="black", font=small)
        d.rectangle([x0, y0, x1, y1], outline="black")
        d.text((x0 + 6, y0 + 4), f'cut="{cut}"', fill="black", font=font)
        d.text(((x0 + x1) / 2 - 60, y1 + 24), "FLOPs speedup (x)", fill="black", font=small)
        d.text((ox + 4, y0 - 16), "Frechet distance (lower = better)", fill="black", font=small)
        for name, p in series.items():
            color = COLORS.get(name, (0, 0, 0))
            xy = [(sx(a), sy(b)) for a, b in p]
            for a, b in zip(xy, xy[1:]):
                if name == "fewer steps":
                    _dashed(d, a, b, color)
                else:
                    d.line([a, b], fill=color, width=2)
            for (a, b) in xy:
                r = 4 if name != "full" else 6
                if name == "diffusers default":
                    d.rectangle([a - r, b - r, a + r, b + r], fill=color)
                else:
                    d.ellipse([a - r, b - r, a + r, b + r], fill=color)
    # legend
    lx, ly = 20, H + 30
    for k, name in enumerate(COLORS):
        x = lx + (k % 4) * 250
        y = ly + (k // 4) * 22
        color = COLORS[name]
        if name == "fewer steps":
            _dashed(d, (x, y + 7), (x + 30, y + 7), color)
        else:
            d.line([(x, y + 7), (x + 30, y + 7)], fill=color, width=2)
        d.ellipse([x + 11, y + 3, x + 19, y + 11], fill=color)
        d.text((x + 36, y), name, fill="black", font=small)
    d.text((lx, ly + 50), "points along a line: N = 3, 4, 5, 6 (FORA: 3, 5, 6); fewer steps: 25, "
           "18, 14, 12, 10, 8 steps; every line starts at full compute (1x)",
           fill="black", font=small)
    img.save(path)


def grid_image(panels: list[tuple[str, torch.Tensor]], path: str, scale: int = 3) -> None:
    """Each panel: a 10x10 grid of 8x8 samples in [-1, 1] (columns = requested digit 0..9)."""
    from PIL import Image, ImageDraw

    cell = 8 * scale + 2
    side = 10 * cell
    gap, top = 12, 22
    img = Image.new("RGB", (len(panels) * (side + gap) + gap, side + top + 8), "white")
    d = ImageDraw.Draw(img)
    font = _font(12)
    for p, (label, x) in enumerate(panels):
        ox = gap + p * (side + gap)
        d.text((ox, 4), label, fill="black", font=font)
        x = ((x[:100].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        for i in range(x.shape[0]):
            r, c = divmod(i, 10)
            tile = Image.fromarray(x[i, 0].numpy(), mode="L").resize((8 * scale, 8 * scale),
                                                                   Image.NEAREST)
            img.paste(tile.convert("RGB"), (ox + c * cell, top + r * cell))
    img.save(path)
