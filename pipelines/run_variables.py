"""The variables one run works on, each with a config of its own.

``compress.variables`` names them (empty: ``[data.variable]``). Each variable's config
is the run's with ``data.variable`` set to it: ``vcinr fit-basis`` fits one model from
each, and ``vcinr compress`` finds each variable's model by it (the newest artifact made
from it, as :func:`~vcinr_sci.model.selection.select_artifact` chooses), so a
single-variable run is the case of one.
"""

from __future__ import annotations

import dataclasses

from vcinr_sci.config import Config
from vcinr_sci.errors import ConfigError


def run_variables(cfg: Config) -> list[str]:
    """The run's variables, in order: ``compress.variables`` or ``[data.variable]``."""
    variables = list(cfg.compress.variables or [cfg.data.variable])
    if not all(variables):
        raise ConfigError("no variable named: set data.variable, or compress.variables (--variables A,B)")
    repeated = sorted({v for v in variables if variables.count(v) > 1})
    if repeated:
        raise ConfigError(f"config.compress.variables names {repeated} more than once")
    return variables


def variable_config(cfg: Config, variable: str) -> Config:
    """``cfg`` with ``data.variable`` set to ``variable`` (the other sections shared)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, variable=variable))
