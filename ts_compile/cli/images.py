"""The demo's pictures, drawn with Pillow: labelled panels, difference maps with a colour bar.

    latents_figure   final latents of full compute | TaylorSeer | FORA (first 3 channels as RGB)
                     and |TaylorSeer - full| | |FORA - full| on one colour scale, with its bar
    digits_figure    digit grids of full compute | TaylorSeer | FORA, row = class 0..9
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from .demo_digits import NUM_CLASSES

PANEL_PIXELS = 192  # each latent panel is upscaled (nearest neighbour) to about this many pixels
DIGIT_PIXELS = 8  # each 8x8 digit is upscaled 8x
GAP = 8
FONT_SIZE = 14
TITLE_H = 24  # room above a panel for its title
BAR_W = 16  # the colour bar's width
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` (FreeType); its bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def to_image(rgb: torch.Tensor, scale: int = 1) -> Image.Image:
    """(H, W, 3) values in [0, 1] -> an RGB image, each pixel a `scale` x `scale` square."""
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    image = Image.frombytes("RGB", (pixels.shape[1], pixels.shape[0]), pixels.numpy().tobytes())
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def heat(values: torch.Tensor, scale: float) -> torch.Tensor:
    """(...) values in [0, scale] -> (..., 3): black -> red -> yellow -> white at `scale`."""
    v = (values / max(scale, 1e-12)).clamp(0, 1) * 3
    return torch.stack([v.clamp(0, 1), (v - 1).clamp(0, 1), (v - 2).clamp(0, 1)], dim=-1)


def colour_bar(height: int, scale: float) -> torch.Tensor:
    """(height, BAR_W, 3): `heat` from `scale` at the top to 0 at the bottom."""
    values = torch.linspace(scale, 0.0, height)[:, None].expand(height, BAR_W)
    return heat(values, scale)


def _latent_rgb(latents: torch.Tensor, grid: int, low: torch.Tensor, high: torch.Tensor
                ) -> torch.Tensor:
    """(1, grid*grid, C) latents -> (grid, grid, 3) in [0, 1]: the first 3 channels."""
    img = latents[0, :, :3].reshape(grid, grid, 3)
    return ((img - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)


def latents_figure(reference: torch.Tensor, taylorseer: torch.Tensor, fora: torch.Tensor,
                   grid: int) -> tuple[Image.Image, float]:
    """The five labelled panels and a colour bar; returns the image and the bar's top value.

    The latent panels share the reference's per-channel range; both difference maps (mean |diff|
    over all channels) share one scale, the larger of their maxima.
    """
    flat = reference[0, :, :3]
    low, high = flat.amin(dim=0), flat.amax(dim=0)
    diffs = [(x - reference)[0].abs().mean(dim=-1).reshape(grid, grid) for x in (taylorseer, fora)]
    scale = max(float(d.max()) for d in diffs)
    factor = max(1, PANEL_PIXELS // grid)
    side = grid * factor
    panels = [(title, to_image(_latent_rgb(x, grid, low, high), factor)) for title, x in
              (("full compute", reference), ("TaylorSeer", taylorseer), ("FORA", fora))]
    panels += [(title, to_image(heat(d, scale), factor))
               for title, d in zip(("|TaylorSeer - full|", "|FORA - full|"), diffs)]
    font = _font()
    tick_w = max(_text_width(font, text) for text in (f"{scale:.3g}", "0"))
    width = GAP + len(panels) * (side + GAP) + BAR_W + 4 + tick_w + GAP
    caption = ("final latents, first 3 channels as RGB (random weights: no picture to recognise; "
               "compare the panels), and mean |difference| over channels")
    height = TITLE_H + side + GAP + TITLE_H
    figure = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(figure)
    x = GAP
    for title, panel in panels:
        draw.text((x, 4), title, fill=BLACK, font=font)
        figure.paste(panel, (x, TITLE_H))
        x += side + GAP
    figure.paste(to_image(colour_bar(side, scale)), (x, TITLE_H))
    draw.rectangle((x - 1, TITLE_H - 1, x + BAR_W, TITLE_H + side), outline=BLACK)
    draw.text((x + BAR_W + 4, TITLE_H), f"{scale:.3g}", fill=BLACK, font=font)
    draw.text((x + BAR_W + 4, TITLE_H + side - FONT_SIZE - 2), "0", fill=BLACK, font=font)
    draw.text((GAP, TITLE_H + side + GAP), caption, fill=BLACK, font=_font(FONT_SIZE - 2))
    return figure, scale


def digits_figure(panels: list[tuple[str, torch.Tensor]], per_class: int,
                  pixels: int = DIGIT_PIXELS) -> Image.Image:
    """Labelled grids side by side, one per method: row = class (labelled), column = sample.

    `panels`: (title, (10 * per_class, 1, H, W) images in [0, 1]) in class-major order; digits
    are drawn as dark ink on white.
    """
    font = _font()
    _, _, h, w = panels[0][1].shape
    side_h, side_w = h * pixels, w * pixels
    grid_w = per_class * side_w + (per_class - 1) * GAP
    grid_h = NUM_CLASSES * side_h + (NUM_CLASSES - 1) * GAP
    panel_w = max(grid_w, *(_text_width(font, title) for title, _ in panels))
    label_w = _text_width(font, "class 0") + 3 * GAP
    width = label_w + len(panels) * (panel_w + 3 * GAP)
    figure = Image.new("RGB", (width, TITLE_H + grid_h + 2 * GAP), WHITE)
    draw = ImageDraw.Draw(figure)
    for r in range(NUM_CLASSES):
        y = TITLE_H + r * (side_h + GAP) + (side_h - FONT_SIZE) // 2
        draw.text((GAP, y), f"class {r}", fill=BLACK, font=font)
    for p, (title, images) in enumerate(panels):
        left = label_w + p * (panel_w + 3 * GAP)
        draw.text((left, 4), title, fill=BLACK, font=font)
        for i in range(images.shape[0]):
            r, c = divmod(i, per_class)
            ink = (1 - images[i, 0])[..., None].expand(h, w, 3)
            figure.paste(to_image(ink, pixels),
                         (left + c * (side_w + GAP), TITLE_H + r * (side_h + GAP)))
    return figure


def _text_width(font: ImageFont.ImageFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)
