"""vcinr-sci: learned lossy compression of gridded scientific data (VC-INR).

Importing the package registers the ``.vcinr`` xarray accessors (``ds.vcinr``,
``da.vcinr``) and, with them, the Zarr-3 codec, as xbitinfo does; under zarr 2 (where
xarray's Zarr backend and the Zarr-3 codec cannot work) it registers nothing, so the
numcodecs codec :class:`vcinr_sci.codec.numcodecs.VCINRCodec` still imports there.

The way through the library reads as the pipeline, one subpackage per stage, and
imports point down it: :mod:`vcinr_sci.data` (dataset -> items on a grid),
:mod:`vcinr_sci.coding` (latent coder, quantiser, error bound: bytes of numbers),
:mod:`vcinr_sci.model` (INR, meta-learning, artifact, registry), :mod:`vcinr_sci.codec`
(chunk bytes, numcodecs and Zarr-3 faces), :mod:`vcinr_sci.io` (stores, accessor),
:mod:`vcinr_sci.bench`. The Ray pipelines (``pipelines/``) import the library, never the
reverse.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vcinr_sci.zarr_compat import ZARR3

try:
    __version__ = version("vcinr-sci")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if ZARR3:
    import vcinr_sci.io.accessor  # noqa: F401  (registers the .vcinr accessors and the Zarr-3 codec)
