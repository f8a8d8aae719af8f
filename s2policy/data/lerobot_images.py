"""Camera frames stored inside LeRobot's data Parquet files: `dtype: "image"` features.

LeRobot writes such a feature (`LeRobotDataset.create(..., use_videos=False)`, or one image feature beside video
features) as the Hugging Face `datasets` Image feature: one cell per frame, a struct {bytes: binary, path: string}.
Its writer saves each frame as a PNG file, then embeds the file's bytes into the cell and keeps only the file's base
name in `path`; hub datasets converted from other sources may hold JPEG. A cell with null bytes refers to an image
file by `path` alone; we resolve a relative path against the dataset folder (Hugging Face's loader would resolve it
against the working directory, which no dataset can rely on).

Camera frames come back as uint8 (H, W, 3) RGB. A cell that cannot give that (no bytes and no file, undecodable,
another size than meta/info.json declares, another channel count) is a DatasetError naming the file, episode, frame
and feature. Image features not declared RGB (depth maps, grey images) are no cameras; their cells are only checked.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

#: PIL modes that are 3-channel RGB once converted without loss (a palette image is stored RGB by index).
RGB_MODES = ("RGB", "P")
#: Channels of the PIL modes a camera image may come in; anything else is reported by its mode name.
MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "F": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
                 "RGBA": 4, "CMYK": 4}


def _pil():
    from PIL import Image  # Pillow comes with torchvision and scikit-image; imported late like pyarrow

    return Image


def image_column(table: Any, feature: str, where: str) -> tuple[list[bytes | None], list[str | None]]:
    """The (bytes, path) of every cell of an image column, in row order; a column of another type is an error."""
    import pyarrow as pa

    col = table.column(feature).combine_chunks()
    if not pa.types.is_struct(col.type) or col.type.get_field_index("bytes") < 0:
        raise DatasetError(f"{where}: column {feature!r} is {col.type}, but meta/info.json declares dtype 'image' "
                           "(a struct {bytes, path} per frame)")
    paths = col.field("path").to_pylist() if col.type.get_field_index("path") >= 0 else [None] * len(col)
    data = col.field("bytes").to_pylist()
    # a null struct (no cell at all) reads as a struct of nulls: the same "no image" error follows
    valid = col.is_valid().to_pylist()
    return ([d if ok else None for d, ok in zip(data, valid)], [p if ok else None for p, ok in zip(paths, valid)])


def cell_bytes(data: bytes | None, path: str | None, root: Path, where: str) -> bytes:
    """The encoded image of one cell: its bytes, or the file its `path` names (relative to the dataset folder)."""
    if data is not None:
        return data
    if not path:
        raise DatasetError(f"{where}: no image (the cell's bytes and path are both null)")
    f = Path(path) if Path(path).is_absolute() else root / path
    try:
        return f.read_bytes()
    except OSError as e:
        raise DatasetError(f"{where}: the cell has no bytes and its image file {path!r} cannot be read "
                           f"(looked for {f}: {e})") from e


def _check_header(image: Any, shape: tuple[int, int], channels: int, where: str) -> None:
    h, w = shape
    if image.size != (w, h):
        raise DatasetError(f"{where}: image of {image.size[1]}x{image.size[0]} (H x W), but meta/info.json declares "
                           f"{h}x{w}")
    if not (image.mode in RGB_MODES if channels == 3 else MODE_CHANNELS.get(image.mode) == channels):
        found = MODE_CHANNELS.get(image.mode, "an unknown number of")
        raise DatasetError(f"{where}: image in mode {image.mode!r} ({found} channel(s)), but meta/info.json declares "
                           f"{channels}{' (RGB)' if channels == 3 else ''}")


def check_image(data: bytes, shape: tuple[int, int], channels: int, where: str) -> None:
    """Reads the image's header only (format, size, mode): cheap, but a damaged pixel stream passes."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_header(image, shape, channels, where)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types (UnidentifiedImageError, SyntaxError, ...)
        raise DatasetError(f"{where}: undecodable image ({type(e).__name__}: {e})") from e


def decode_image(data: bytes, shape: tuple[int, int], where: str) -> np.ndarray:
    """One encoded frame (PNG, JPEG, ...) -> uint8 (H, W, 3), checked against the declared (H, W)."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_header(image, shape, 3, where)
            image.load()  # decodes the pixels: a truncated or corrupt stream fails here
            return np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)  # writable
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - see check_image
        raise DatasetError(f"{where}: undecodable image ({type(e).__name__}: {e})") from e
