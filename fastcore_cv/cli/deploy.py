"""``export``, ``quantize``, ``predict`` and ``serve``: checkpoint -> ONNX -> int8 -> answers.

``predict`` and ``serve`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastcore_cv.cli.common import one_line_errors, positive
from fastcore_cv.output_files import check_writable


@one_line_errors("export")
def _export(args: argparse.Namespace) -> int:
    from fastcore_cv.export.checkpoint import load_checkpoint
    from fastcore_cv.export.onnx_export import to_onnx
    from fastcore_cv.vision.files import get_image_files

    check_writable(args.out, "out")
    ckpt = load_checkpoint(args.checkpoint)
    verify = [p for v in args.verify for p in (get_image_files(v) if Path(v).is_dir() else [v])]
    report = to_onnx(
        ckpt.model,
        args.out,
        classes=ckpt.classes,
        preprocess_config=ckpt.preprocess_config,
        opset=args.opset,
        verify_images=verify[: args.max_verify] or None,
        softmax=not args.logits,
        valid=args.valid,
        target_accuracy=args.target_accuracy,
    )
    print(report)
    return 0


@one_line_errors("quantize")
def _quantize(args: argparse.Namespace) -> int:
    from fastcore_cv.export.quantization import quantize

    check_writable(args.int8, "int8")
    report = quantize(
        args.fp32,
        args.int8,
        args.calibration,
        activations=args.activations,
        method=args.method,
        valid=args.valid,
        max_calibration=args.max_calibration,
    )
    print(report)
    return 0


@one_line_errors("predict")
def _predict(args: argparse.Namespace) -> int:
    from fastcore_cv.export.predictor import Predictor
    from fastcore_cv.vision.decode import ImageError

    if args.out or args.engine != "local":
        return _predict_shards(args)
    if args.csv:
        check_writable(args.csv, "--csv")
        if len(args.images) != 1 or not Path(args.images[0]).is_dir():
            raise ValueError("--csv: give exactly one FOLDER of images")
    predictor = Predictor(args.model, threads=args.threads)
    if args.csv:
        summary = predictor.predict_folder(
            args.images[0], args.csv, batch_size=args.batch_size, workers=args.workers,
            threshold=args.threshold,
        )  # fmt: skip
        print(
            f"{summary.images} images, {summary.errors} unreadable, in "
            f"{summary.seconds:.1f} s -> {summary.csv_path}"
        )
        return 0
    rows, failed = [], 0
    for image in args.images:
        try:
            p = predictor.predict(image, top_k=args.top_k, threshold=args.threshold)
        except ImageError as e:
            failed += 1
            rows.append({"image": image, "error": str(e)})
            if not args.json:
                print(f"fastcore-cv predict: error: {e}", file=sys.stderr)
            continue
        rows.append({"image": image, **p.to_dict()})
        if not args.json:
            sure = "" if p.accepted else f"not sure (below {p.threshold:.1%}), best guess "
            print(f"{image}: {sure}{p.label} {p.probability:.1%} ({p.latency_ms:.1f} ms)")
            if args.top_k > 1:
                for label, prob in p.top_k:
                    print(f"    {label:<20} {prob:7.2%}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0


def _predict_shards(args: argparse.Namespace) -> int:
    """SOURCE (a folder or a .txt listing) -> resumable shards in --out (export/shards.py),
    scored by the local threads or by Ray actors (export/ray_engine.py)."""
    from fastcore_cv.export.predictor import Predictor
    from fastcore_cv.export.shards import list_sources, plan_shards, score_to_shards

    if not args.out:
        raise ValueError(f"--engine {args.engine}: give --out DIR (the shards' folder)")
    if args.csv:
        raise ValueError("--csv: not with --out (the shards are the output)")
    if len(args.images) != 1:
        raise ValueError("--out: give exactly one SOURCE (a folder, or a .txt list of files)")
    if args.engine == "ray":
        import ray  # noqa: F401  (missing: one line naming the [ray] extra, before any work)
    if args.format == "parquet":
        import pyarrow  # noqa: F401
    if not Path(args.model).is_file():
        raise ValueError(f"model: {args.model} does not exist or is not a file")
    check_writable(args.out, "--out", folder=True)  # before listing a big SOURCE
    sources = list_sources(args.images[0])
    plan = plan_shards(sources, args.out, model=args.model, shard_size=args.shard_size,
                       fmt=args.format, threshold=args.threshold)  # fmt: skip
    if args.engine == "local":
        summary = score_to_shards(
            Predictor(args.model, threads=args.threads), plan, batch_size=args.batch_size,
            workers=args.workers, threshold=args.threshold, max_shards=args.max_shards,
        )  # fmt: skip
    else:
        from fastcore_cv.export.ray_engine import ray_cluster, score_to_shards_ray

        with ray_cluster(args.ray_address):
            summary = score_to_shards_ray(
                args.model, plan, threads=args.threads, actors=args.workers,
                batch_size=args.batch_size, threshold=args.threshold,
                max_shards=args.max_shards,
            )  # fmt: skip
    print(summary)
    return 0


@one_line_errors("info")
def _info(args: argparse.Namespace) -> int:
    from fastcore_cv.export.metadata import describe
    from fastcore_cv.export.predictor import Predictor

    info = Predictor(args.model, warmup=0).info
    if args.json:
        print(json.dumps({"model": str(args.model), **info.to_dict()}, indent=2))
    else:
        print(f"{args.model}\n{describe(info)}")
    return 0


@one_line_errors("serve")
def _serve(args: argparse.Namespace) -> int:
    from fastcore_cv.serve.app import run

    run(
        args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        timeout_s=args.timeout,
        concurrency=args.concurrency,
        read_timeout_s=args.read_timeout,
        max_connections=args.max_connections,
        root_path=args.root_path,
        drain_s=args.drain,
        graceful_timeout_s=args.graceful_timeout,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``export``, ``quantize``, ``predict`` and ``serve``."""
    p = sub.add_parser("export", help="checkpoint (model.pt + model.json) -> one .onnx file")
    p.add_argument("checkpoint", help="model.pt written by `train` (its model.json beside it)")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--verify", nargs="*", default=[], metavar="IMAGE_OR_FOLDER",
                   help="photos for the torch-vs-onnxruntime parity check")  # fmt: skip
    p.add_argument("--max-verify", type=positive(int), default=32, help="at most this many")
    p.add_argument("--opset", type=positive(int), default=None, help="ONNX opset (default 20)")
    p.add_argument("--logits", action="store_true", help="export logits, not probabilities")
    p.add_argument("--valid", metavar="FOLDER",
                   help="labelled photos FOLDER/<class>/: fit the 'not sure' cut")  # fmt: skip
    p.add_argument("--target-accuracy", type=positive(float), default=0.99, metavar="A",
                   help="--valid: accuracy on accepted images (default %(default)s)")  # fmt: skip
    p.set_defaults(run=_export)

    p = sub.add_parser("quantize", help="fp32 .onnx -> static int8 .onnx, checked on photos")
    p.add_argument("fp32", help="the exported fp32 model")
    p.add_argument("int8", help="the int8 model to write")
    p.add_argument("--calibration", required=True, metavar="FOLDER", help="photos to calibrate")
    p.add_argument("--valid", metavar="FOLDER", help="labelled photos (FOLDER/<class>/...)")
    p.add_argument("--max-calibration", type=positive(int), default=100)
    p.add_argument("--activations", choices=["uint8", "int8"], default="uint8")
    p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.set_defaults(run=_quantize)

    p = sub.add_parser("predict", help="classify photos with an exported model (no torch)")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (or one FOLDER + --csv)")
    p.add_argument("--top-k", type=positive(int), default=1, help="classes to show (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.add_argument("--csv", metavar="OUT", help="predict every image in FOLDER into this CSV")
    p.add_argument("--threads", type=positive(int), default=1, help="onnxruntime threads")
    p.add_argument("--threshold", type=positive(float), default=None, metavar="P",
                   help="'not sure' below this probability (default: the model's own)")  # fmt: skip
    from fastcore_cv.export.batch import BATCH_SIZE  # torch-free, as serve.limits below

    p.add_argument("--batch-size", type=positive(int), default=BATCH_SIZE,
                   help="--csv: images per onnxruntime run (default %(default)s)")  # fmt: skip
    p.add_argument("--workers", type=positive(int), default=None,
                   help="--csv: decoding+scoring threads (default: cores / --threads)")  # fmt: skip
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="--out: score on this machine's threads or on Ray actors "
                        "(--workers = actors; needs the [ray] extra)")  # fmt: skip
    p.add_argument("--out", metavar="DIR",
                   help="score one SOURCE (a FOLDER or a .txt list of paths/URIs) into "
                        "resumable shards in DIR; a re-run skips the shards written")  # fmt: skip
    from fastcore_cv.export.shards import FORMATS, SHARD_SIZE

    p.add_argument("--format", choices=FORMATS, default="csv", help="--out: shard format")
    p.add_argument("--shard-size", type=positive(int), default=SHARD_SIZE,
                   help="--out: files per shard (default %(default)s)")  # fmt: skip
    p.add_argument("--max-shards", type=positive(int), default=None,
                   help="--out: write at most this many new shards, then stop")  # fmt: skip
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="--engine ray: an existing cluster (default: RAY_ADDRESS, else a "
                        "local Ray on 127.0.0.1)")  # fmt: skip
    p.set_defaults(run=_predict)

    p = sub.add_parser("info", help="what an exported model is: id, training, calibration")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(run=_info)

    from fastcore_cv.serve import limits  # the one home of the server's defaults

    p = sub.add_parser("serve", help="web page + JSON API for an exported model")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--host", default=limits.HOST, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=limits.PORT, help="port (default %(default)s)")
    p.add_argument("--workers", type=positive(int), default=1, help="worker processes")
    p.add_argument("--threads", type=positive(int), default=limits.THREADS,
                   help="onnxruntime threads each (default %(default)s)")  # fmt: skip
    p.add_argument("--max-upload-mb", type=positive(float), default=limits.MAX_UPLOAD_BYTES / 2**20,
                   help="largest upload in MB (default %(default)s)")  # fmt: skip
    p.add_argument("--max-pixels", type=positive(int), default=limits.MAX_PIXELS,
                   help="largest image in pixels (default %(default)s)")  # fmt: skip
    p.add_argument("--timeout", type=positive(float), default=limits.TIMEOUT_S,
                   help="seconds per prediction request (default %(default)s)")  # fmt: skip
    p.add_argument("--concurrency", type=positive(int), default=None,
                   help="predictions at once per worker (default: cores / --threads)")  # fmt: skip
    p.add_argument("--read-timeout", type=positive(float), default=limits.READ_TIMEOUT_S,
                   help="seconds to receive a whole request (default %(default)s)")  # fmt: skip
    p.add_argument("--max-connections", type=positive(int), default=limits.MAX_CONNECTIONS,
                   help="open connections per worker (default %(default)s)")  # fmt: skip
    p.add_argument("--root-path", default="", metavar="PREFIX",
                   help="URL prefix a proxy strips, e.g. /models/cats")  # fmt: skip
    p.add_argument("--drain", type=float, default=limits.DRAIN_S, metavar="S",
                   help="on SIGTERM: seconds of /health 503 while still serving "
                        "(default %(default)s)")  # fmt: skip
    p.add_argument("--graceful-timeout", type=positive(float), default=limits.GRACEFUL_TIMEOUT_S,
                   metavar="S", help="then seconds for in-flight requests to finish "
                                     "(default %(default)s)")  # fmt: skip
    p.set_defaults(run=_serve)
