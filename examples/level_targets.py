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
import time

import numpy as np

from vcinr_sci.codec.container import decode_container
from vcinr_sci.codec.core import decode_chunk, encode_chunk
from vcinr_sci.data.items import load_dataset
from vcinr_sci.data.normalise import item_means
from vcinr_sci.metrics import psnr_from_mse
from vcinr_sci.model.artifact import load_artifact
from vcinr_sci.model.registry import get_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model artifact folder")
    p.add_argument("--fields", type=int, default=24, help="held-out fields (0: all)")
    p.add_argument("--consecutive", action="store_true", help="the last --fields in a row, not evenly spaced")
    p.add_argument("--chunk-fields", type=int, default=0, help="fields a chunk (0: all in one)")
    args = p.parse_args()
    art = load_artifact(args.model)
    model = get_model(art.hash, [args.model])
    data = load_dataset(art.config.data, art.normaliser)
    index = np.asarray(data.split.test)
    if args.fields and args.fields < len(index):
        index = index[-args.fields:] if args.consecutive else \
            index[np.unique(np.linspace(0, len(index) - 1, args.fields).round().astype(int))]
    x = data.source.load(index).astype(np.float32)
    size = args.chunk_fields or len(x)
    chunks = [x[s : s + size] for s in range(0, len(x), size)]
    norm, valid = art.normaliser, ~np.isnan(x)
    truth = norm.normalise(x[valid].astype(np.float64))
    fields = np.arange(len(x))
    items = np.where(valid, norm.normalise(np.where(valid, x, 0.0).astype(np.float64)), 0.0).reshape(len(x), -1)
    mean = norm.mean_field  # the model codes what it leaves, where it has one
    base = np.zeros_like(items) if mean is None else np.broadcast_to(model.to_items(mean[None]), items.shape)
    anomalies, kept = (items - base).astype(np.float32), valid.reshape(len(x), -1)
    offsets = np.zeros((len(x), 1), np.float32)
    if model.subtracts_item_mean:  # as the codec does: the item means out, stored in float16
        offsets = item_means(np.where(kept, anomalies, np.nan))[:, None]
        anomalies -= offsets
        offsets = offsets.astype(np.float16).astype(np.float32)
    base = base + offsets
    print(f"model {art.hash[:16]} ({art.config.name}), {len(x)} held-out fields, chunks of {size}")
    print("| level | target | tuning PSNR | tuned step alone | codec: PSNR | bits/value | corrected chunks | s |")
    print("|---|---|---|---|---|---|---|---|")
    for level in art.ladder:
        target = art.level_target(level)
        alone = model.round_trip(fields, anomalies, kept, 0, level)[1] + base  # the level's own step, as before
        alone_psnr = psnr_from_mse(float(np.mean((alone.reshape(x.shape)[valid] - truth) ** 2)))
        t0 = time.perf_counter()
        encoded = [encode_chunk(c, model, level, 0) for c in chunks]
        seconds = time.perf_counter() - t0
        out = np.concatenate([decode_chunk(b) for b in encoded])
        psnr = psnr_from_mse(float(np.mean((norm.normalise(out[valid].astype(np.float64)) - truth) ** 2)))
        corrected = sum(decode_container(b).residual is not None for b in encoded)
        tuned = art.metrics.get("levels", {}).get(level, {}).get("val_psnr", float("nan"))
        print(f"| {level} | {target if target is not None else '-'} | {tuned:.2f} | {alone_psnr:.2f} | {psnr:.2f} | "
              f"{8 * sum(map(len, encoded)) / x.size:.4f} | {corrected}/{len(encoded)} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
