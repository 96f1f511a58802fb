"""The command line every pipeline shares: a config, ``--set`` overrides, and for the
stages after meta-training the model to work on."""

from __future__ import annotations

import argparse

from vcinr_sci.config import Config, load_config, parse_overrides


def config_parser(
    prog: str, doc: str | None, config_help: str, set_example: str, model_help: str | None = None
) -> argparse.ArgumentParser:
    """``--config`` (required), ``--set KEY=VALUE`` (repeatable) and, with
    ``model_help``, ``--model``; usage lines name ``prog`` (``vcinr compress``)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help=config_help)
    if model_help:
        p.add_argument("--model", help=model_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"override, e.g. {set_example}")
    return p


def load(args: argparse.Namespace) -> Config:
    """The config named by ``args.config`` with ``args.set`` applied."""
    return load_config(args.config, parse_overrides(args.set))
