"""Which artifact a pipeline stage or benchmark works on, chosen one way for all.

``--model`` (an artifact folder, or a hash looked up in ``train.artifact_dir``) wins;
otherwise the newest artifact in ``train.artifact_dir`` made from this config's data,
model and meta sections (data, model and basis for a linear model; all four for a hybrid). Stored configs are compared *through the config
dataclasses*, so an artifact written before a defaulted field was added still matches.
"""

from __future__ import annotations

import json
from pathlib import Path

from vcinr_sci.config import Config
from vcinr_sci.errors import ArtifactError
from vcinr_sci.model.artifact import MANIFEST, find_artifact

SECTIONS = {"inr": ("data", "model", "meta"), "linear": ("data", "model", "basis"),
            "hybrid": ("data", "model", "meta", "basis")}


def inr_sections(config: dict) -> dict:
    """The sections of a config (as a dict) that define its model: a meta-trained INR,
    a fitted linear basis, or both."""
    wanted = SECTIONS.get(config.get("model", {}).get("kind"), SECTIONS["inr"])
    return {k: v for k, v in config.items() if k in wanted}


def select_artifact(
    cfg: Config,
    model: str | None = None,
    *,
    with_coders: bool = False,
    require_coders: bool = False,
    quality: str | None = None,
) -> Path:
    """The artifact folder named by ``model``, or else the newest one in
    ``cfg.train.artifact_dir`` meta-trained from ``cfg``'s INR sections: those whose
    having coders equals ``with_coders`` first. With ``require_coders`` only artifacts
    holding coders (with level ``quality``, when named) qualify."""
    if model:
        if Path(model, MANIFEST).is_file():
            return Path(model)
        return find_artifact(model, [cfg.train.artifact_dir])
    root = Path(cfg.train.artifact_dir)
    want = inr_sections(cfg.to_dict())
    matches = []  # (preferred kind, modification time, folder)
    for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else []:
        try:
            stored = json.loads(manifest.read_text())
            stored_cfg = Config.from_dict(stored.get("config", {})).to_dict()
        except (json.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError):
            continue
        if inr_sections(stored_cfg) != want:
            continue
        coders = stored.get("extra", {}).get("coders", {})
        if require_coders and not (coders and (not quality or quality in coders)):
            continue
        matches.append((bool(coders) == with_coders, manifest.stat().st_mtime, manifest.parent))
    if not matches:
        if require_coders:
            raise ArtifactError(
                f"no artifact in {root} with coders{f' (level {quality!r})' if quality else ''} was trained from "
                "this config: run the train, latents and fit-coder stages first, or pass --model"
            )
        first = {"linear": "pipelines.fit_basis", "hybrid": "pipelines.fit_hybrid"}.get(cfg.model.kind,
                                                                                       "pipelines.meta_train")
        raise ArtifactError(f"no artifact in {root} was made from this config's {'/'.join(inr_sections(cfg.to_dict()))}: "
                            f"run {first} first or pass --model")
    return max(matches)[2]
