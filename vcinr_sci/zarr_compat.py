"""Which Zarr is installed, and a clear error for the parts that need zarr 3.

The numcodecs codec (:class:`vcinr_sci.codec.numcodecs.VCINRCodec`, Zarr format 2 compressor) and
the decode path (models, models stored inside a store) work with zarr 2.18 and
numcodecs 0.15 too, as many existing archives and benchmark harnesses pin them. The
Zarr-3 codec (:mod:`vcinr_sci.codec.zarr3`), the xarray accessor (whose xarray needs
zarr 3), ``vcinr info`` and the pipelines that write stores need zarr >= 3.1.
"""

from __future__ import annotations

import zarr

ZARR3 = int(zarr.__version__.split(".")[0]) >= 3


def require_zarr3(feature: str) -> None:
    """Raise :class:`ImportError` naming ``feature`` unless zarr 3 is installed."""
    if not ZARR3:
        raise ImportError(
            f"{feature} needs zarr >= 3.1 (installed: zarr {zarr.__version__}); install "
            "'vcinr-sci[zarr3]'. With zarr 2, use the numcodecs codec vcinr_sci.codec.numcodecs.VCINRCodec "
            "as a Zarr format 2 compressor."
        )
