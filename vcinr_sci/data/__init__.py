"""The pipeline's first stage: from a dataset on disk to items an INR can fit.

:mod:`~vcinr_sci.data.sources` opens a variable lazily and splits its fields,
:mod:`~vcinr_sci.data.grids` and :mod:`~vcinr_sci.data.regrid` describe and change the
grid, :mod:`~vcinr_sci.data.normalise` maps values onto [0, 1], and
:mod:`~vcinr_sci.data.items` cuts fields into the items (fields or patches) a model fits.
"""
