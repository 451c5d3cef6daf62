"""Edits a copy of a photo may have gone through, with random strengths, for learned whitening.

Reverse image search must find an image from an edited copy of it: cropped a little, mirrored,
turned a few degrees, recoloured, blurred, re-compressed or noisy. Pairs of (library image, edited
copy) show which directions of h such edits move; :func:`training.whitening.fit_whitening` then
scales those directions down (learned whitening: Radenovic et al. 2018, "Fine-tuning CNN Image
Retrieval with No Human Annotation", Sec. 3.3, whose matching pairs come from 3-D reconstruction;
ours come from these edits, so no labels are needed).

Strengths are drawn per copy from ranges that scale with the image (blur as a fraction of the
shorter side), and every copy is made on a thumbnail of at most ``2 x`` the encoder's input size,
so a library of 12-megapixel photos costs no more per pair than one of thumbnails.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

KINDS = ("crop", "mirror", "rotate", "colour", "blur", "jpeg", "noise")


def copy_edit(data: bytes, size: int, rng: np.random.Generator) -> bytes:
    """An edited copy (PNG or JPEG bytes) of the encoded image ``data``, one random edit of
    :data:`KINDS`; raises ``ValueError`` when ``data`` does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at 1/2-1/8 scale, fast
            image = opened.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad bytes
        raise ValueError(f"cannot decode image: {exc}") from exc
    image.thumbnail((2 * size, 2 * size), Image.BICUBIC)
    w, h = image.size
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind == "crop":  # keep 70-90% of each side, then back to the original size
        f = rng.uniform(0.05, 0.15)
        box = (int(f * w), int(f * h), max(int((1 - f) * w), 1), max(int((1 - f) * h), 1))
        image = image.crop(box).resize((w, h), Image.BICUBIC)
    elif kind == "mirror":
        image = ImageOps.mirror(image)
    elif kind == "rotate":
        image = image.rotate(float(rng.uniform(-20, 20)), Image.BICUBIC, fillcolor=(0, 0, 0))
    elif kind == "colour":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.3, 1.5))
    elif kind == "blur":  # sigma 0.5-1.5 px at 32 px
        radius = float(rng.uniform(0.015, 0.045)) * min(w, h)
        image = image.filter(ImageFilter.GaussianBlur(radius))
    elif kind == "noise":
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0, rng.uniform(5, 25), pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.save(buffer, "JPEG", quality=int(rng.integers(20, 81)))
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()
