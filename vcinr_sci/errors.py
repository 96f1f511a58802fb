"""The project's errors: one base, :class:`VCINRError`, so a caller can catch every
failure vcinr reports on purpose, and specific errors under it."""

from __future__ import annotations


class VCINRError(Exception):
    """Base of every error vcinr raises on purpose (bad input, config, model or bytes)."""


class ConfigError(VCINRError, ValueError):
    """A config value, key or file that cannot be used; the message names the key."""
