"""Stores and xarray: :mod:`~vcinr_sci.io.accessor` (the ``.vcinr`` accessors, writing and
reading coded stores), :mod:`~vcinr_sci.io.layout` (a coded variable's chunks, encoding
and attributes), :mod:`~vcinr_sci.io.store` (raw chunk bytes, stored sizes),
:mod:`~vcinr_sci.io.sampling` (values at any point, continuous resolution),
:mod:`~vcinr_sci.io.info` (``vcinr info``), :mod:`~vcinr_sci.io.decompress`
(``vcinr decompress``) and :mod:`~vcinr_sci.io.integrity` (``vcinr verify``). Most of it
needs zarr 3.
"""
