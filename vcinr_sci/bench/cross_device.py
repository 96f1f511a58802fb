"""``vcinr bench cross-device``: how much the INR's reconstruction of the same latents
differs between the machines and settings a chunk may be decoded on.

A vcinr chunk stores entropy-coded latents, decoded bit-exactly anywhere (the entropy
model's tables run on the CPU). What can differ is the float32 evaluation of the INR on
them: another BLAS kernel, thread count or GPU changes the order of the sums. This
benchmark encodes held-out fields once on the CPU (the reference, as the codec's encoder
does), then decodes the same latents on every available device and setting and prints
the largest point-wise difference from the CPU reference, in normalised [0, 1] units and
in data units. The error-bounded mode must leave at least this much margin.

    vcinr bench cross-device --model artifacts/<hash>
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Iterator

import numpy as np
import torch

from vcinr_sci.bench.output import write_json
from vcinr_sci.data.items import load_dataset
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.device import full_float32


def _decode(model, coords: torch.Tensor, phi: torch.Tensor, device: str) -> np.ndarray:
    m = model.to(device)
    out = m.decode(coords.to(device), phi.to(device))
    return out[..., 0].double().cpu().numpy()


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:  # leave the process as it was
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _tf32_matmul() -> Iterator[None]:
    """CUDA float32 matmuls in TF32 inside the block, the caller's setting restored after
    (torch 2.13's ``fp32_precision``; the legacy ``allow_tf32`` flag raises once it is set)."""
    matmul = torch.backends.cuda.matmul
    saved, matmul.fp32_precision = matmul.fp32_precision, "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = saved


def _run(args: argparse.Namespace) -> dict[str, Any]:
    artifact = load_artifact(args.model)
    model, cfg = artifact.model.eval(), artifact.config
    data_cfg = cfg.data
    if args.data:
        data_cfg.paths = list(args.data)
    data = load_dataset(data_cfg, artifact.normaliser)
    part = "test" if len(data.split.test) else "train"
    items = data.items(part, getattr(data.split, part)[: args.items])
    coords, target, mask = items.batch(np.arange(len(items)))
    steps = args.steps or cfg.latents.inner_steps
    torch.set_num_threads(args.threads)
    phi = model.to("cpu").adapt(coords, target, mask, steps)
    with full_float32():
        ref = _decode(model, coords, phi, "cpu")
    valid = mask[..., 0].numpy()

    # (name, device, the precision it decodes in): the codec decodes in full_float32,
    # which is what the bounded mode's margin must cover; TF32 shows what it guards against.
    torch.set_num_threads(1)
    settings: list[tuple[str, str, Any]] = [("cpu, 1 thread", "cpu", full_float32)]
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        settings += [(f"{gpu} float32 (as the codec)", "cuda", full_float32), (f"{gpu} TF32 matmul", "cuda", _tf32_matmul)]
    scale = artifact.normaliser.hi - artifact.normaliser.lo
    rows = []
    for name, device, precision in settings:
        with precision():
            out = _decode(model, coords, phi, device)
        diff = np.abs(out - ref)[valid]
        rows.append({"decoder": name, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "max_abs_diff_data_units": float(diff.max() * scale)})
    return {
        "benchmark": "cross-device",
        "model": artifact.hash,
        "reference": f"cpu, {args.threads} threads, float32",
        "fields": len(items),
        "values": int(valid.sum()),
        "normaliser": artifact.normaliser.to_dict(),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vcinr bench cross-device", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="trained model artifact folder")
    p.add_argument("--data", action="append", help="data file(s) instead of the artifact's data.paths (repeatable)")
    p.add_argument("--items", type=int, default=16, help="held-out fields to decode (default 16)")
    p.add_argument("--steps", type=int, help="inner steps at encode (default: the artifact's latents.inner_steps)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the reference decode (default 2)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    out = run(args)
    print(f"model {out['model'][:16]}, {out['fields']} fields ({out['values']:,} values); reference: {out['reference']}")
    print("| decoder | max abs diff [0, 1] | mean abs diff [0, 1] | max abs diff (data units) |")
    print("|---|---|---|---|")
    for r in out["rows"]:
        print(f"| {r['decoder']} | {r['max_abs_diff']:.3g} | {r['mean_abs_diff']:.3g} | {r['max_abs_diff_data_units']:.3g} |")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
