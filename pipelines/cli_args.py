"""The command line every pipeline shares: a config, ``--set`` overrides, and for the
stages after meta-training the model to work on."""

from __future__ import annotations

import argparse

from vcinr_sci.config import Config, load_config, parse_overrides


def config_parser(
    prog: str, doc: str | None, config_help: str, set_example: str, model_help: str | None = None,
    variables_help: str | None = None,
) -> argparse.ArgumentParser:
    """``--config`` (required), ``--set KEY=VALUE`` (repeatable), with ``model_help``
    ``--model``, and with ``variables_help`` ``--variables A,B`` (``compress.variables``);
    usage lines name ``prog`` (``vcinr compress``)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help=config_help)
    if model_help:
        p.add_argument("--model", help=model_help)
    if variables_help:
        p.add_argument("--variables", metavar="A,B", help=f"{variables_help} (sets compress.variables)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override, e.g. {set_example}")
    return p


def load(args: argparse.Namespace) -> Config:
    """The config named by ``args.config`` with ``args.set`` and ``args.variables`` applied."""
    overrides = parse_overrides(args.set)
    if getattr(args, "variables", None):
        overrides["compress.variables"] = [v.strip() for v in args.variables.split(",") if v.strip()]
    return load_config(args.config, overrides)
