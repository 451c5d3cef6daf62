"""The edits people make to photos before they post them again: DISC21's families, as JPEG bytes.

Used to measure copy detection (``benchmarks/bench_copy_detection.py``) and to fit its calibration
(``simclr calibrate-copies``) on edited copies of images that are never evaluated. The families and
strengths follow the Image Similarity Challenge's query edits (Douze et al. 2021, "The 2021 Image
Similarity Dataset and Challenge"): strong crops, rotations, flips, overlays, borders, the photo
inset in a larger picture, colour filters, blur, noise, JPEG, thumbnails and combinations. Each
strength is drawn from the range in :data:`FAMILIES`' docstrings, with the caller's generator.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]
WORDS = [
    "sale",
    "today",
    "only",
    "best",
    "photo",
    "look",
    "at",
    "this",
    "wow",
    "amazing",
    "view",
    "new",
    "post",
    "share",
    "like",
    "follow",
]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A window of 50-70% of each side (a quarter to half of the area), anywhere."""
    w, h = image.size
    fw, fh = rng.uniform(0.5, 0.7, 2)
    cw, ch = max(1, int(w * fw)), max(1, int(h * fh))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def rotate90(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.transpose(Image.Transpose.ROTATE_90)


def rotate180(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.transpose(Image.Transpose.ROTATE_180)


def rotate270(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.transpose(Image.Transpose.ROTATE_270)


def rotate_small(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """5-20 degrees either way, corners filled black, the canvas kept."""
    angle = float(rng.uniform(5, 20) * rng.choice([-1, 1]))
    return image.rotate(angle, Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def mirror(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(image)


def _text(draw: ImageDraw.ImageDraw, xy, size: int, fill, rng: np.random.Generator) -> None:
    words = " ".join(rng.choice(WORDS, int(rng.integers(2, 5))))
    draw.text(xy, words.upper(), fill=fill, font_size=size)


def text(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One or two bars of caption text, each 10-15% of the height, top or bottom (meme style)."""
    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    for top in rng.permutation([True, False])[: int(rng.integers(1, 3))]:
        bar = int(h * rng.uniform(0.10, 0.15))
        y = 0 if top else h - bar
        draw.rectangle((0, y, w, y + bar), fill=_colour(rng))
        _text(draw, (int(w * 0.03), y + bar // 6), int(bar * 0.6), _colour(rng), rng)
    return out


def emoji(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One to three smiley stickers, each 15-30% of the shorter side."""
    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(1, 4))):
        r = int(min(w, h) * rng.uniform(0.15, 0.30) / 2)
        cx, cy = int(rng.integers(r, max(r + 1, w - r))), int(rng.integers(r, max(r + 1, h - r)))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 205, 40), outline=(0, 0, 0))
        e = max(1, r // 6)
        for dx in (-r // 3, r // 3):
            draw.ellipse((cx + dx - e, cy - r // 3 - e, cx + dx + e, cy - r // 3 + e), fill=0)
        draw.arc((cx - r // 2, cy - r // 4, cx + r // 2, cy + r // 2), 20, 160, fill=0, width=e)
    return out


def stripes(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Semi-transparent diagonal stripes over the whole picture (opacity 25-45%)."""
    w, h = image.size
    layer = Image.new("RGB", (w, h), _colour(rng))
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    step = max(8, int(min(w, h) * rng.uniform(0.06, 0.12)))
    alpha = int(255 * rng.uniform(0.25, 0.45))
    for x in range(-h, w, step):
        draw.line((x, 0, x + h, h), fill=alpha, width=max(2, step // 3))
    return Image.composite(layer, image, mask)


def border(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A solid border of 5-25% of each side, in one colour."""
    w, h = image.size
    pad = int(max(w, h) * rng.uniform(0.05, 0.25))
    return ImageOps.expand(image, border=pad, fill=_colour(rng))


def inset(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo at 45-70% of the width of a larger canvas (a screenshot or a meme template): a
    plain background, a title bar and lines of text around it."""
    w, h = image.size
    scale = rng.uniform(0.45, 0.70)
    cw = int(w / scale)
    ch = int(cw * rng.uniform(0.8, 1.4))
    ch = max(ch, int(h * cw / w * 1.0 * scale) + 40)
    canvas = Image.new("RGB", (cw, ch), tuple(int(c) for c in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, cw, int(ch * 0.08)), fill=_colour(rng))
    photo = image.resize((int(cw * scale), max(1, int(h * cw * scale / w))), Image.BICUBIC)
    x = int(rng.integers(0, max(1, cw - photo.size[0])))
    y = int(rng.integers(int(ch * 0.08), max(int(ch * 0.08) + 1, ch - photo.size[1])))
    canvas.paste(photo, (x, y))
    for line in range(int(rng.integers(1, 4))):
        ty = (y + photo.size[1] + 10 + line * int(ch * 0.05)) % ch
        _text(draw, (int(cw * 0.05), ty), max(8, int(ch * 0.035)), (40, 40, 40), rng)
    return canvas


def colour_filter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One of: sepia, a colour tint (30-50%), contrast x0.5-1.8, saturation x0-2."""
    kind = int(rng.integers(0, 4))
    if kind == 0:
        grey = ImageOps.grayscale(image)
        return ImageOps.colorize(grey, (40, 26, 13), (255, 240, 192))
    if kind == 1:
        return Image.blend(image, Image.new("RGB", image.size, _colour(rng)), rng.uniform(0.3, 0.5))
    if kind == 2:
        return ImageEnhance.Contrast(image).enhance(rng.uniform(0.5, 1.8))
    return ImageEnhance.Color(image).enhance(rng.uniform(0.0, 2.0))


def greyscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur of radius 0.5-1% of the longer side."""
    return image.filter(ImageFilter.GaussianBlur(max(image.size) * rng.uniform(0.005, 0.01)))


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian noise, sigma 15-30 on the 0-255 scale."""
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0, rng.uniform(15, 30), pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def thumbnail(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Downscaled to 64-128 px on the longer side."""
    side = int(rng.integers(64, 129))
    out = image.copy()
    out.thumbnail((side, side), Image.BICUBIC)
    return out


def combination(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop of 70-85% of each side, then two of: filter, text, blur, mirror, border."""
    w, h = image.size
    fw, fh = rng.uniform(0.7, 0.85, 2)
    cw, ch = int(w * fw), int(h * fh)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.crop((x, y, x + cw, y + ch))
    for name in rng.choice(["colour_filter", "text", "blur", "mirror", "border"], 2, replace=False):
        out = FAMILIES[str(name)](out, rng)
    return out


#: Edit name -> edit. ``jpeg`` and ``exif`` are applied while encoding (see :func:`edited`).
FAMILIES: dict[str, Edit] = {
    "crop": crop,
    "rotate90": rotate90,
    "rotate180": rotate180,
    "rotate270": rotate270,
    "rotate_small": rotate_small,
    "mirror": mirror,
    "text": text,
    "emoji": emoji,
    "stripes": stripes,
    "border": border,
    "inset": inset,
    "colour_filter": colour_filter,
    "greyscale": greyscale,
    "blur": blur,
    "noise": noise,
    "jpeg": lambda image, rng: image,
    "thumbnail": thumbnail,
    "exif": lambda image, rng: image,
    "combination": combination,
}


def edited(data: bytes, family: str, rng: np.random.Generator) -> bytes:
    """An edited copy of the image ``data`` as JPEG bytes (quality 90, except the ``jpeg`` family:
    quality 8-20; ``exif``: the pixels stored sideways with the EXIF orientation that turns them
    upright again, as a phone writes them)."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    out = FAMILIES[family](image, rng)
    buffer = io.BytesIO()
    if family == "jpeg":
        out.save(buffer, "JPEG", quality=int(rng.integers(8, 21)))
    elif family == "exif":
        orientation = int(rng.choice([6, 8]))
        # 6: displayed = stored turned 90 degrees clockwise, so store it turned anticlockwise
        turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
        exif = Image.Exif()
        exif[0x0112] = orientation
        out.transpose(turn).save(buffer, "JPEG", quality=90, exif=exif)
    else:
        out.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
