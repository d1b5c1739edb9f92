"""The production commands of ``fastcore-cv``: train, lr-find, export, quantize, predict, serve,
bench.

Exit codes scripts can trust: 0 done, 1 an error (one line on stderr, no traceback; set
FASTCORE_CV_DEBUG=1 for the traceback), 2 a usage error (argparse). ``predict``, ``serve``
and ``bench`` (unless given a torch ``--checkpoint`` to compare with) never import torch.
Wired into ``fastcore_cv.cli`` with ``add_commands(sub)``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

ERRORS = (ValueError, TypeError, OSError, RuntimeError)  # ModelFileError/ImageError are ValueError


def _one_line_errors(name: str) -> Callable:
    """Turn an expected failure into one stderr line and exit code 1."""

    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def runner(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except ERRORS as e:
                if os.environ.get("FASTCORE_CV_DEBUG"):
                    raise
                print(f"fastcore-cv {name}: error: {e}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"fastcore-cv {name}: interrupted", file=sys.stderr)
                return 130

        return runner

    return wrap


def _data(args: argparse.Namespace):
    from fastcore_cv.vision import ImageDataLoaders

    return ImageDataLoaders.from_folder(
        args.folder, valid_pct=args.valid_pct, seed=args.seed, size=args.size, bs=args.bs
    )


def _learner(args: argparse.Namespace):
    from fastcore_cv.vision.transfer import vision_learner

    pretrained = args.pretrained if args.pretrained is not None else args.arch != "simple_cnn"
    return vision_learner(_data(args), args.arch, pretrained=pretrained, seed=args.seed)


@_one_line_errors("train")
def _train(args: argparse.Namespace) -> int:
    from fastcore_cv.export.checkpoint import save_checkpoint, sidecar_path

    learn = _learner(args)
    print(learn.source_dls)
    learn.fine_tune(args.epochs, base_lr=args.lr, freeze_epochs=args.freeze_epochs)
    out = Path(args.out)
    path = save_checkpoint(learn, out / "model.pt", arch=args.arch)
    print(f"saved {path} + {sidecar_path(path).name} (weights only; no pickle)")
    if args.export:
        from fastcore_cv.export.onnx_export import export_learner

        print(export_learner(learn, out / "model.onnx"))
    return 0


@_one_line_errors("lr-find")
def _lr_find(args: argparse.Namespace) -> int:
    learn = _learner(args)
    result = learn.lr_find()
    print(result)
    print(f"suggested learning rate: {result.suggestion:.2e} ({result.note})")
    if args.plot:
        print(f"plot: {result.plot(args.plot)}")
    return 0


@_one_line_errors("export")
def _export(args: argparse.Namespace) -> int:
    from fastcore_cv.export.checkpoint import load_checkpoint
    from fastcore_cv.export.onnx_export import to_onnx
    from fastcore_cv.vision.files import get_image_files

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
    )
    print(report)
    return 0


@_one_line_errors("quantize")
def _quantize(args: argparse.Namespace) -> int:
    from fastcore_cv.export.quantization import quantize

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


@_one_line_errors("predict")
def _predict(args: argparse.Namespace) -> int:
    from fastcore_cv.export.predictor import Predictor
    from fastcore_cv.vision.decode import ImageError

    predictor = Predictor(args.model, threads=args.threads)
    if args.csv:
        if len(args.images) != 1 or not Path(args.images[0]).is_dir():
            raise ValueError("--csv: give exactly one FOLDER of images")
        summary = predictor.predict_folder(args.images[0], args.csv)
        print(
            f"{summary.images} images, {summary.errors} unreadable, in "
            f"{summary.seconds:.1f} s -> {summary.csv_path}"
        )
        return 0
    rows, failed = [], 0
    for image in args.images:
        try:
            p = predictor.predict(image, top_k=args.top_k)
        except ImageError as e:
            failed += 1
            rows.append({"image": image, "error": str(e)})
            if not args.json:
                print(f"fastcore-cv predict: error: {e}", file=sys.stderr)
            continue
        rows.append({"image": image, **p.to_dict()})
        if not args.json:
            print(f"{image}: {p.label} {p.probability:.1%} ({p.latency_ms:.1f} ms)")
            if args.top_k > 1:
                for label, prob in p.top_k:
                    print(f"    {label:<20} {prob:7.2%}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0


@_one_line_errors("serve")
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
    )
    return 0


def _bench_image(path: str | None) -> tuple[bytes, str]:
    """The photo to time: ``path``'s bytes, or scikit-image's cat (451x300) as a JPEG."""
    if path is not None:
        if not Path(path).is_file():
            raise ValueError(f"--image: {path} does not exist or is not a file")
        data = Path(path).read_bytes()
        return data, f"{path} ({len(data) / 1e3:.1f} kB)"
    try:
        from skimage import data as photos
    except ImportError:
        raise ValueError("--image: give a photo (scikit-image, for the default one, is not "
                         "installed)") from None  # fmt: skip
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photos.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue(), f"chelsea (scikit-image, 451x300 JPEG, {buf.tell() / 1e3:.1f} kB)"


def _torch_calls(checkpoint: str, image: bytes) -> dict[str, Callable[[], object]]:
    """torch eager rows from a weights-only checkpoint: the only place ``bench`` imports torch."""
    from fastcore_cv.export.checkpoint import load_checkpoint
    from fastcore_cv.export.latency import torch_calls

    ckpt = load_checkpoint(checkpoint)
    return torch_calls(ckpt.model, ckpt.preprocess_config, ckpt.classes, image)


@_one_line_errors("bench")
def _bench(args: argparse.Namespace) -> int:
    import fastcore_cv
    from fastcore_cv.export.latency import measure_latency, predictor_calls
    from fastcore_cv.export.predictor import Predictor

    if args.load_clients is None and (args.load_seconds, args.workers) != (None, None):
        raise ValueError("--load-seconds and --workers go with --load-clients")
    # Everything is loaded and checked before the first timing: a bad file fails at once.
    predictors = [Predictor(model, threads=args.threads) for model in args.models]
    image, image_name = _bench_image(args.image)
    names = [Path(m).name for m in args.models]
    if len(set(names)) < len(names):  # same file name in two folders: show the paths
        names = list(args.models)
    cases = {n: predictor_calls(p, image) for n, p in zip(names, predictors, strict=True)}
    torch_name = f"torch eager ({Path(args.checkpoint).name})" if args.checkpoint else None
    if torch_name:
        cases[torch_name] = _torch_calls(args.checkpoint, image)
    fastcore_cv.set_num_threads(args.threads)  # torch (if loaded), Numba and BLAS alike
    print(f"fastcore-cv bench: {image_name}; {args.runs} runs per row, "
          f"{args.threads} thread(s)")  # fmt: skip
    stats = {(name, case): measure_latency(fn, args.runs)
             for name, calls in cases.items() for case, fn in calls.items()}  # fmt: skip
    width = max(len("model"), *(len(name) for name in cases))
    head = f"{'model':<{width}}  {'input':<22}  {'p50 ms':>8}  {'p99 ms':>8}"
    print(head + ("  vs torch (p50)" if torch_name else ""))
    for (name, case), s in stats.items():
        line = f"{name:<{width}}  {case:<22}  {s.p50_ms:8.2f}  {s.p99_ms:8.2f}"
        if torch_name:
            line += f"  {stats[torch_name, case].p50_ms / s.p50_ms:13.2f}x"
        print(line)
    if args.load_clients is None:
        return 0
    return _bench_load(args, image, names)


def _bench_load(args: argparse.Namespace, image: bytes, names: list[str]) -> int:
    """``--load-clients``: each model behind the real server, loaded by concurrent clients."""
    from fastcore_cv.serve.loadgen import ServerProcess

    clients, seconds = args.load_clients, args.load_seconds or 10.0
    workers, failed = args.workers or 1, 0
    for name, model in zip(names, args.models, strict=True):
        with ServerProcess(model, workers=workers, threads=args.threads) as server:
            server.load(image, clients=clients, requests=max(20, 4 * clients))  # warm-up
            result = server.load(image, clients=clients, seconds=seconds)
        print(f"load {name} ({workers} worker(s), {args.threads} thread(s) each, "
              f"raw image body): {result.summary()}")  # fmt: skip
        failed += result.error_count
    if failed:
        print(f"fastcore-cv bench: error: {failed} request(s) failed under load",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _positive(kind: type) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return value

    return parse


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="photos in FOLDER/<class>/ (or train/ and valid/ inside)")
    p.add_argument(
        "--arch", default="efficientnet_lite0", help="architecture (default %(default)s)"
    )
    p.add_argument("--size", type=_positive(int), default=224, help="image size (default 224)")
    p.add_argument("--bs", type=_positive(int), default=32, help="batch size (default 32)")
    p.add_argument("--valid-pct", type=float, default=0.2, help="validation share (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="split and training seed (default 42)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                   help="ImageNet weights (default: yes, except simple_cnn)")  # fmt: skip


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add train, lr-find, export, quantize, predict, serve and bench to the CLI's
    subparsers."""
    p = sub.add_parser("train", help="fine-tune a pretrained model on a folder of photos")
    _data_options(p)
    p.add_argument("--epochs", type=_positive(int), default=3, help="unfrozen epochs (default 3)")
    p.add_argument("--freeze-epochs", type=_positive(int), default=1, help="head-only epochs")
    p.add_argument("--lr", type=_positive(float), default=None, help="base LR (default: lr_find)")
    p.add_argument("--out", default="runs/model", help="folder for model.pt/.json (and .onnx)")
    p.add_argument("--export", action="store_true", help="also write OUT/model.onnx")
    p.set_defaults(run=_train)

    p = sub.add_parser("lr-find", help="sweep the learning rate and suggest one")
    _data_options(p)
    p.add_argument("--plot", metavar="PNG", help="save the loss-vs-LR plot here")
    p.set_defaults(run=_lr_find)

    p = sub.add_parser("export", help="checkpoint (model.pt + model.json) -> one .onnx file")
    p.add_argument("checkpoint", help="model.pt written by `train` (its model.json beside it)")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--verify", nargs="*", default=[], metavar="IMAGE_OR_FOLDER",
                   help="photos for the torch-vs-onnxruntime parity check")  # fmt: skip
    p.add_argument("--max-verify", type=_positive(int), default=32, help="at most this many")
    p.add_argument("--opset", type=_positive(int), default=None, help="ONNX opset (default 20)")
    p.add_argument("--logits", action="store_true", help="export logits, not probabilities")
    p.set_defaults(run=_export)

    p = sub.add_parser("quantize", help="fp32 .onnx -> static int8 .onnx, checked on photos")
    p.add_argument("fp32", help="the exported fp32 model")
    p.add_argument("int8", help="the int8 model to write")
    p.add_argument("--calibration", required=True, metavar="FOLDER", help="photos to calibrate")
    p.add_argument("--valid", metavar="FOLDER", help="labelled photos (FOLDER/<class>/...)")
    p.add_argument("--max-calibration", type=_positive(int), default=100)
    p.add_argument("--activations", choices=["uint8", "int8"], default="uint8")
    p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.set_defaults(run=_quantize)

    p = sub.add_parser("predict", help="classify photos with an exported model (no torch)")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (or one FOLDER + --csv)")
    p.add_argument("--top-k", type=_positive(int), default=1, help="classes to show (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.add_argument("--csv", metavar="OUT", help="predict every image in FOLDER into this CSV")
    p.add_argument("--threads", type=_positive(int), default=1, help="onnxruntime threads")
    p.set_defaults(run=_predict)

    p = sub.add_parser("serve", help="web page + JSON API for an exported model")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    p.add_argument("--workers", type=_positive(int), default=1, help="worker processes")
    p.add_argument("--threads", type=_positive(int), default=1, help="onnxruntime threads each")
    p.add_argument("--max-upload-mb", type=_positive(float), default=10.0)
    p.add_argument("--max-pixels", type=_positive(int), default=50_000_000)
    p.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds per request")
    p.set_defaults(run=_serve)

    p = sub.add_parser("bench", help="latency of exported models (and the server under load)")
    p.add_argument("models", nargs="+", metavar="MODEL", help="exported .onnx files")
    p.add_argument("--image", help="photo to time (default: scikit-image's cat as a JPEG)")
    p.add_argument("--runs", type=_positive(int), default=100, help="timed calls (default 100)")
    p.add_argument("--threads", type=_positive(int), default=1, help="onnxruntime/torch threads")
    p.add_argument("--checkpoint", metavar="MODEL_PT",
                   help="model.pt from `train`: add torch eager rows and the speed-up")  # fmt: skip
    p.add_argument("--load-clients", type=_positive(int), metavar="C",
                   help="also serve each model and load it with C concurrent clients")  # fmt: skip
    p.add_argument("--load-seconds", type=_positive(float), metavar="S",
                   help="length of the load run (default 10)")  # fmt: skip
    p.add_argument("--workers", type=_positive(int), metavar="W",
                   help="server worker processes under load (default 1)")  # fmt: skip
    p.set_defaults(run=_bench)


def main(argv: list[str] | None = None) -> int:
    """These commands alone (``python -m fastcore_cv.cli_production``); the full CLI is
    ``fastcore_cv.cli``."""
    parser = argparse.ArgumentParser(prog="fastcore-cv")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
