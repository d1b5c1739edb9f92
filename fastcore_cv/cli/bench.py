"""``bench``: latency of exported models (p50/p99), against torch eager with ``--checkpoint``,
and the real server under concurrent load with ``--load-clients``. Torch only with
``--checkpoint``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from fastcore_cv.cli.common import one_line_errors, positive


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
    from fastcore_cv.perf.latency import torch_calls

    ckpt = load_checkpoint(checkpoint)
    return torch_calls(ckpt.model, ckpt.preprocess_config, ckpt.classes, image)


@one_line_errors("bench")
def _bench(args: argparse.Namespace) -> int:
    import fastcore_cv
    from fastcore_cv.export.predictor import Predictor
    from fastcore_cv.perf.latency import measure_latency, predictor_calls

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
    from fastcore_cv.perf.server import ServerProcess
    from fastcore_cv.serve.limits import WAITING_PER_SLOT

    clients, seconds = args.load_clients, args.load_seconds or 10.0
    workers, failed, busy, line = args.workers or 1, 0, 0, 0
    for name, model in zip(names, args.models, strict=True):
        with ServerProcess(model, workers=workers, threads=args.threads) as server:
            # Per worker: the slots running and WAITING_PER_SLOT waiting for each; beyond
            # that the server answers 503 busy at once, by design (serve/work.py).
            line = server.health()["predictions"]["limit"] * (1 + WAITING_PER_SLOT) * workers
            server.load(image, clients=clients, requests=max(20, 4 * clients))  # warm-up
            result = server.load(image, clients=clients, seconds=seconds)
        print(f"load {name} ({workers} worker(s), {args.threads} thread(s) each, "
              f"raw image body): {result.summary()}")  # fmt: skip
        failed += result.error_count
        busy += result.statuses.get(503, 0)
    if failed:
        why = (f"; {busy} were 503 busy: {clients} clients > the server's line of {line} "
               "(prediction slots x (1 + WAITING_PER_SLOT) per worker), use fewer "
               "--load-clients or more --workers" if busy and clients > line else "")  # fmt: skip
        print(f"fastcore-cv bench: error: {failed} request(s) failed under load{why}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``bench``."""
    from fastcore_cv.serve.limits import WAITING_PER_SLOT

    p = sub.add_parser("bench", help="latency of exported models (and the server under load)")
    p.add_argument("models", nargs="+", metavar="MODEL", help="exported .onnx files")
    p.add_argument("--image", help="photo to time (default: scikit-image's cat as a JPEG)")
    p.add_argument("--runs", type=positive(int), default=100, help="timed calls (default 100)")
    p.add_argument("--threads", type=positive(int), default=1, help="onnxruntime/torch threads")
    p.add_argument("--checkpoint", metavar="MODEL_PT",
                   help="model.pt from `train`: add torch eager rows and the speed-up")  # fmt: skip
    p.add_argument("--load-clients", type=positive(int), metavar="C",
                   help="also serve each model and load it with C concurrent clients; more "
                        "than the server's line (cores / --threads x "
                        f"{1 + WAITING_PER_SLOT} per worker) get 503 busy, counted as "
                        "errors")  # fmt: skip
    p.add_argument("--load-seconds", type=positive(float), metavar="S",
                   help="length of the load run (default 10)")  # fmt: skip
    p.add_argument("--workers", type=positive(int), metavar="W",
                   help="server worker processes under load (default 1)")  # fmt: skip
    p.set_defaults(run=_bench)
