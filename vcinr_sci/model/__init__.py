"""The model: the shared INR (:mod:`~vcinr_sci.model.inr`), meta-learning of its
latents (:mod:`~vcinr_sci.model.meta`, :mod:`~vcinr_sci.model.steps`,
:mod:`~vcinr_sci.model.training`), the saved artifact
(:mod:`~vcinr_sci.model.artifact`) and fitted latents on disk
(:mod:`~vcinr_sci.model.latents`); for coding, a model ready on its device
(:mod:`~vcinr_sci.model.loaded`), the per-process registry that finds models by hash
(:mod:`~vcinr_sci.model.registry`) and models stored inside a Zarr store
(:mod:`~vcinr_sci.model.embedded`). Nothing here imports the latent coder's training,
the codec or the stores' writing.
"""
