"""Coding of numbers into bytes, the generic tools the model's artifact and the codec use:
the learned latent coder (:mod:`~vcinr_sci.coding.coder`), the uniform quantiser
(:mod:`~vcinr_sci.coding.quantiser`), the error-bounded mode's correction
(:mod:`~vcinr_sci.coding.bound`: the maths; :mod:`~vcinr_sci.coding.residual_format`:
its bytes; :mod:`~vcinr_sci.coding.rans`: the entropy coder) and size-checked Zstd
sections (:mod:`~vcinr_sci.coding.zstd`). Nothing here knows about INRs, models or Zarr.
"""
