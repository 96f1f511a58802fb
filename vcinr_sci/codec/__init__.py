"""The ``vcinr`` codec: :mod:`~vcinr_sci.codec.container` (the chunk's bytes: header,
mask, payload, residual section), :mod:`~vcinr_sci.codec.core` (encode and decode a
chunk with a model), and its two faces, :mod:`~vcinr_sci.codec.numcodecs` (numcodecs /
Zarr format 2; works with zarr 2.18) and :mod:`~vcinr_sci.codec.zarr3` (Zarr format 3).
This package imports nothing itself, so the numcodecs face loads without zarr 3.
"""
