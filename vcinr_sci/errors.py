"""The project's errors: one base, :class:`VCINRError`, so a caller can catch every
failure vcinr reports on purpose, and specific errors under it. Each also subclasses the
builtin it has always been (``ValueError`` for bad input or bytes, ``RuntimeError`` for
missing or inconsistent files), so existing ``except`` clauses keep working."""

from __future__ import annotations


class VCINRError(Exception):
    """Base of every error vcinr raises on purpose (bad input, config, model or bytes)."""


class ConfigError(VCINRError, ValueError):
    """A config value, key or file that cannot be used; the message names the key."""


class CodecError(VCINRError, ValueError):
    """Input the codec cannot encode or decode: dtype, chunk shape, inf values, config,
    an unknown quality level."""


class ChunkFormatError(VCINRError, ValueError):
    """The bytes are not a valid vcinr chunk, or header fields are inconsistent."""


class BadChunkError(ChunkFormatError):
    """A stored chunk that does not decode, with the variable and chunk it is."""

    def __init__(self, variable: str, index: tuple[int, ...], key: str, cause: Exception):
        self.variable, self.index, self.key = variable, index, key
        super().__init__(f"variable {variable!r}, chunk {index} (key {key!r}) cannot be decoded: {cause}")


class BoundError(VCINRError, ValueError):
    """An error-bound option that is not a positive finite number."""


class ArtifactError(VCINRError, RuntimeError):
    """A model artifact is missing, corrupt, or not the one asked for."""


class StoreError(VCINRError, ValueError):
    """A store a reader refuses to read as it stands (e.g. one holding a symlink that
    leads out of it)."""


class LatentsError(VCINRError, RuntimeError):
    """Latent shards are missing, incomplete or from another model."""


class UsageError(VCINRError, ValueError):
    """Command-line options that do not fit together (a benchmark's or a pipeline's); the
    CLI turns it into exit status 2."""
