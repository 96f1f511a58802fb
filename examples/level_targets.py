"""Where each quality level lands on held-out fields: its target PSNR, what its tuned
step alone gives there, and what the codec's chunks give (rate control and, past the
model's reach, its correction; ``vcinr_sci/coding/rate_control.py``). Issue 23's
measure: each level within 0.5 dB of its target.

    python examples/level_targets.py --model out/suite/artifacts/HASH [--fields 24] [--consecutive]

The fields are the model's test part (its config's data section): ``--fields`` of them
evenly spaced (the suite's spread fields), or with ``--consecutive`` the last ones in a
row, coded as one chunk per ``--chunk-fields`` (default: all in one chunk). PSNR on the
model's normalisation range; bits per value of the whole stored chunks.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from vcinr_sci.bench.fields import load_fields
from vcinr_sci.codec.container import decode_container
from vcinr_sci.codec.core import decode_chunk, encode_chunk
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.registry import get_model, prepare_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model artifact folder")
    p.add_argument("--fields", type=int, default=24, help="held-out fields (0: all)")
    p.add_argument("--consecutive", action="store_true", help="the last --fields in a row, not evenly spaced")
    p.add_argument("--chunk-fields", type=int, default=0, help="fields a chunk (0: all in one)")
    args = p.parse_args()
    art = load_artifact(args.model)
    model = get_model(art.hash, [args.model])
    # The same model with no level targets: each level at its tuned step, as before rate control.
    untargeted = prepare_model(dataclasses.replace(
        art, metrics={k: v for k, v in art.metrics.items() if k not in ("levels", "hybrid")}))
    held_out = argparse.Namespace(data=None, part="test", regrid=None, fields=args.fields,
                                  consecutive=args.consecutive)
    x = load_fields(held_out, None, art.config).values.astype(np.float32)
    size = args.chunk_fields or len(x)
    chunks = [x[s : s + size] for s in range(0, len(x), size)]
    norm, valid = art.normaliser, ~np.isnan(x)
    truth = norm.normalise(x[valid].astype(np.float64))

    def psnr(encoded: list[bytes]) -> float:
        out = np.concatenate([decode_chunk(b) for b in encoded])
        return psnr_from_mse(float(np.mean((norm.normalise(out[valid].astype(np.float64)) - truth) ** 2)))

    print(f"model {art.hash[:16]} ({art.config.name}), {len(x)} held-out fields, chunks of {size}")
    print("| level | target | tuning PSNR | tuned step alone | codec: PSNR | bits/value | corrected chunks | s |")
    print("|---|---|---|---|---|---|---|---|")
    for level in art.ladder:
        target = art.level_target(level)
        alone = psnr([encode_chunk(c, untargeted, level, 0) for c in chunks])
        t0 = time.perf_counter()
        encoded = [encode_chunk(c, model, level, 0) for c in chunks]
        seconds = time.perf_counter() - t0
        corrected = sum(decode_container(b).residual is not None for b in encoded)
        tuned = art.metrics.get("levels", {}).get(level, {}).get("val_psnr", float("nan"))
        print(f"| {level} | {target if target is not None else '-'} | {tuned:.2f} | {alone:.2f} | {psnr(encoded):.2f} | "
              f"{8 * sum(map(len, encoded)) / x.size:.4f} | {corrected}/{len(encoded)} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
