"""The ``vcinr`` console script: parse arguments, then call the library or a pipeline.

Each subcommand forwards its remaining arguments to the ``main(argv)`` of the module
that does the work, so ``vcinr train --help`` shows that module's own options.

The CLI is the top floor: it is the one place that may start the Ray pipelines
(``pipelines.*``, imported by name only when their command runs, so the library never
imports them) and the one place that turns errors into exit codes: a
:class:`~vcinr_sci.errors.UsageError` exits with status 2 and its message, any other
:class:`~vcinr_sci.errors.VCINRError` with status 1 and its message, and a reader that
went away (``vcinr verify STORE | head -1``) ends the command quietly with status 141,
as a tool killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from vcinr_sci.errors import UsageError, VCINRError

# subcommand -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pipelines.meta_train", "meta-train the shared INR on Ray Train and write a model artifact"),
    "fit-basis": ("pipelines.fit_basis", "fit a linear model (training mean + EOFs, one coefficient coder per target PSNR)"),
    "fit-hybrid": ("pipelines.fit_hybrid", "fit a hybrid model (linear model + an INR on what its leading EOFs leave)"),
    "latents": ("pipelines.build_latents", "encode a dataset's items into latent shards on Ray Data"),
    "fit-coder": ("pipelines.train_coder", "train latent coders (one per lambda) on Ray Train into a new artifact"),
    "compress": ("pipelines.compress", "compress a dataset into a vcinr-coded Zarr store on Ray Data (resumable)"),
    "decompress": ("vcinr_sci.io.decompress", "decode a vcinr-coded Zarr store to netCDF or plain Zarr"),
    "info": ("vcinr_sci.io.info", "show a Zarr store's codec config, model hash, sizes and stored error figures"),
    "verify": ("vcinr_sci.io.integrity", "check a store's chunks against the SHA-256 digests recorded when it was written"),
}
BENCHMARKS: dict[str, tuple[str, str]] = {
    "conditioning": ("vcinr_sci.bench.conditioning", "GatedSiren vs ShiftSiren at equal budgets"),
    "rd": ("vcinr_sci.bench.rd", "rate-distortion of learned coders vs uniform quantisation, from real bytes"),
    "residual": ("vcinr_sci.bench.residual", "coders of the error-bounded mode's correction: bytes, time, bound check"),
    "codecs": ("vcinr_sci.bench.codecs", "vcinr vs SZ3, SPERR, ZFP, JPEG 2000, BitRound+Zstd at equal error, from real bytes"),
    "suite": ("vcinr_sci.bench.suite", "one table over datasets from bench codecs results (examples/bench_suite.sh)"),
    "throughput": ("vcinr_sci.bench.throughput", "meta-train, encode and decode speed, FLOPs per value, fraction of matmul peak"),
    "cross-device": ("vcinr_sci.bench.cross_device", "reconstruction differences between CPU and GPU decoders"),
    "scale": ("vcinr_sci.bench.scale", "compress pipeline at 1x and 8x data: peak RSS per process, values/s per actor count"),
    "synthetic": ("vcinr_sci.bench.synthetic", "synthetic 0.25-degree hourly fields (scale runs only, never rate-distortion)"),
}


def _dispatch(table: dict[str, tuple[str, str]], name: str, argv: list[str], label: str) -> int:
    module = importlib.import_module(table[name][0])
    try:
        return int(module.main(argv) or 0)
    except UsageError as e:
        print(f"vcinr: {e}", file=sys.stderr)
        return 2
    except VCINRError as e:  # a failure reported on purpose: its message says it all
        print(f"vcinr {label}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` names; returns its exit status."""
    try:
        try:
            return _main(sys.argv[1:] if argv is None else argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
    except BrokenPipeError:
        # Python ignores SIGPIPE (left so: the pipelines' Ray sockets need it), so a write
        # to a pipe whose reader is gone raises instead. Stdout now goes nowhere, so that
        # the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vcinr", description="VC-INR compression of gridded scientific data")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    bench = sub.add_parser("bench", help="benchmarks that print tables (--json PATH for machine-readable output)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, (_, help_) in BENCHMARKS.items():
        bench_sub.add_parser(name, help=help_, add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return _dispatch(BENCHMARKS, args.bench, rest, f"bench {args.bench}")
    return _dispatch(COMMANDS, args.command, rest, args.command)


if __name__ == "__main__":
    sys.exit(main())
