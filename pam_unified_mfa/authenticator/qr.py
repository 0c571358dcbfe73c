"""Read the enrollment QR code from an image, as the phone's camera would.

Decoding happens here, in the app, so the enrollment path under test is the real one: the PNG
the server renders goes through an independent QR decoder (zxing-cpp), not back through the
library that drew it.
"""

from __future__ import annotations

from pathlib import Path

import zxingcpp
from PIL import Image, UnidentifiedImageError

from pam_unified_mfa.errors import UnifiedMFAError


class QRError(UnifiedMFAError):
    """The image cannot be read or does not hold exactly one QR code."""


def decode(path: Path) -> str:
    """The text of the single QR code in the image at `path`."""
    try:
        with Image.open(path) as image:
            image.load()
            found = zxingcpp.read_barcodes(image)
    except FileNotFoundError:
        raise QRError(f"no such image: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise QRError(f"{path} is not an image this app can read") from None
    except OSError as exc:
        raise QRError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    texts = {b.text for b in found if b.valid and b.format == zxingcpp.BarcodeFormat.QRCode}
    if not texts:
        raise QRError(f"no QR code found in {path}")
    if len(texts) > 1:
        # Picking one would enroll whichever the decoder happened to see first.
        raise QRError(f"{path} holds several different QR codes; crop it to one")
    return texts.pop()
