"""The demo's pictures: final latents side by side with difference maps, and digit grids."""

from __future__ import annotations

import struct
import zlib

import torch

from .demo_digits import NUM_CLASSES

PANEL_PIXELS = 192  # each panel is upscaled (nearest neighbour) to about this many pixels a side
GAP = 4


# --- the PNG ----------------------------------------------------------------------------------

def write_png(path: str, width: int, height: int, rgb: bytes) -> None:
    """Write an 8-bit RGB PNG; `rgb` is `height` rows of `width` RGB triples."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"expected {width * height * 3} bytes of RGB, got {len(rgb)}")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bit, RGB, no interlace
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _latent_rgb(latents: torch.Tensor, grid: int, low: torch.Tensor, high: torch.Tensor
                ) -> torch.Tensor:
    """(1, grid*grid, C) latents -> (grid, grid, 3) in [0, 1]: the first 3 channels."""
    img = latents[0, :, :3].reshape(grid, grid, 3)
    return ((img - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)


def _heat(diff: torch.Tensor, scale: float) -> torch.Tensor:
    """(grid, grid) |diff| -> (grid, grid, 3): black -> red -> yellow -> white at `scale`."""
    v = (diff / max(scale, 1e-12)).clamp(0, 1) * 3
    return torch.stack([v.clamp(0, 1), (v - 1).clamp(0, 1), (v - 2).clamp(0, 1)], dim=-1)


def comparison_image(reference: torch.Tensor, taylorseer: torch.Tensor, fora: torch.Tensor,
                     grid: int) -> tuple[torch.Tensor, float]:
    """Panels full | taylorseer | FORA | |taylorseer - full| | |FORA - full| as (H, W, 3) uint8.

    The latent panels share the reference's per-channel range; both diff maps (mean |diff| over
    all channels) share one scale, the larger of their maxima, which is returned.
    """
    flat = reference[0, :, :3]
    low, high = flat.amin(dim=0), flat.amax(dim=0)
    diffs = [(x - reference)[0].abs().mean(dim=-1).reshape(grid, grid) for x in (taylorseer, fora)]
    scale = max(float(d.max()) for d in diffs)
    panels = [_latent_rgb(x, grid, low, high) for x in (reference, taylorseer, fora)]
    panels += [_heat(d, scale) for d in diffs]
    factor = max(1, PANEL_PIXELS // grid)
    side = grid * factor
    gap = torch.ones(side, GAP, 3)
    row: list[torch.Tensor] = []
    for panel in panels:
        big = panel.repeat_interleave(factor, dim=0).repeat_interleave(factor, dim=1)
        row += [big, gap]
    image = torch.cat(row[:-1], dim=1)
    border = torch.ones(GAP, image.shape[1], 3)
    image = torch.cat([border, image, border], dim=0)
    side_border = torch.ones(image.shape[0], GAP, 3)
    image = torch.cat([side_border, image, side_border], dim=1)
    return (image * 255).round().to(torch.uint8), scale


# --- the picture -------------------------------------------------------------------------------

# 3x5 glyphs: five rows of three, '#' = ink
_FONT = {k: v.split() for k, v in {
    "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.", "C": "### #.. #.. #.. ###",
    "D": "##. #.# #.# #.# ##.", "E": "### #.. ### #.. ###", "F": "### #.. ### #.. #..",
    "G": "### #.. #.# #.# ###", "H": "#.# #.# ### #.# #.#", "I": "### .#. .#. .#. ###",
    "J": "..# ..# ..# #.# ###", "K": "#.# #.# ##. #.# #.#", "L": "#.. #.. #.. #.. ###",
    "M": "#.# ### ### #.# #.#", "N": "##. #.# #.# #.# #.#", "O": "### #.# #.# #.# ###",
    "P": "### #.# ### #.. #..", "Q": "### #.# #.# ### ..#", "R": "##. #.# ##. #.# #.#",
    "S": "### #.. ### ..# ###", "T": "### .#. .#. .#. .#.", "U": "#.# #.# #.# #.# ###",
    "V": "#.# #.# #.# #.# .#.", "W": "#.# #.# ### ### #.#", "X": "#.# #.# .#. #.# #.#",
    "Y": "#.# #.# .#. .#. .#.", "Z": "### ..# .#. #.. ###",
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "### ..# ### #.. ###",
    "3": "### ..# ### ..# ###", "4": "#.# #.# ### ..# ..#", "5": "### #.. ### ..# ###",
    "6": "### #.. ### #.# ###", "7": "### ..# ..# ..# ..#", "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ###", "=": "... ### ... ### ...", " ": "... ... ... ... ...",
    "(": ".#. #.. #.. #.. .#.", ")": ".#. ..# ..# ..# .#.", ",": "... ... ... .#. #..",
    ".": "... ... ... ... .#.", "-": "... ... ### ... ...", "/": "..# ..# .#. #.. #..",
    ":": "... .#. ... .#. ...",
}.items()}


def _glyph(ch: str) -> torch.Tensor:
    rows = _FONT.get(ch.upper(), _FONT[" "])
    return torch.tensor([[b == "#" for b in row] for row in rows], dtype=torch.float32)


def text_bitmap(text: str, scale: int = 2) -> torch.Tensor:
    """(5*scale, 4*scale*len) ink mask of `text` in a 3x5 pixel font."""
    cols = []
    for ch in text:
        cols += [_glyph(ch), torch.zeros(5, 1)]
    mask = torch.cat(cols, dim=1) if cols else torch.zeros(5, 1)
    return mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def digits_grid_image(panels: list[tuple[str, torch.Tensor]], per_class: int, pixels: int = 8,
                      gap: int = 6, margin: int = 8) -> torch.Tensor:
    """Labelled panels side by side, one per method: row = class, column = sample. uint8 RGB.

    `panels`: (label, (10 * per_class, 1, H, W) images in [0, 1]) in class-major order. The
    class of each row is written at the left.
    """
    label_h = 5 * 2 + 6
    blocks = []
    for label, images in panels:
        n, _, h, w = images.shape
        side_h, side_w = h * pixels, w * pixels
        grid_w = per_class * side_w + (per_class - 1) * gap
        grid_h = NUM_CLASSES * side_h + (NUM_CLASSES - 1) * gap
        text = text_bitmap(label)
        panel_w = max(grid_w, text.shape[1])
        left = (panel_w - grid_w) // 2
        canvas = torch.ones(label_h + grid_h, panel_w)
        canvas[3:3 + text.shape[0], :text.shape[1]] = 1 - text
        for i in range(n):
            r, c = divmod(i, per_class)
            big = images[i, 0].repeat_interleave(pixels, 0).repeat_interleave(pixels, 1)
            y, x = label_h + r * (side_h + gap), left + c * (side_w + gap)
            canvas[y:y + side_h, x:x + side_w] = 1 - big  # dark ink on white
        blocks.append(canvas)
    height = max(b.shape[0] for b in blocks)
    side_h = panels[0][1].shape[2] * pixels
    classes = torch.ones(height, 2 * 4 + 4)
    for r in range(NUM_CLASSES):
        digit = text_bitmap(str(r))
        y = label_h + r * (side_h + gap) + (side_h - digit.shape[0]) // 2
        classes[y:y + digit.shape[0], :digit.shape[1]] = 1 - digit
    row = [classes]
    for b in blocks:
        pad = torch.ones(height - b.shape[0], b.shape[1])
        row += [torch.cat([b, pad]), torch.ones(height, 3 * margin)]
    image = torch.cat(row[:-1], dim=1)
    image = torch.nn.functional.pad(image, (margin, margin, margin, margin), value=1.0)
    rgb = image[..., None].expand(*image.shape, 3)
    return (rgb * 255).round().to(torch.uint8)
