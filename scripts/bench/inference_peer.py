"""The peer of our inference benchmark: ONNX Runtime's own Python API running a model on the same frames, so that
camhub's per-frame inference time has something to be compared with. Run with the venv scripts/install-models.sh
makes (onnxruntime, numpy, pillow):

  assets/.venv/bin/python scripts/bench/inference_peer.py --model assets/models/coco-centernet.onnx --kind boxes \
      --frames assets/photos --runs 200 --threads 1 --json evidence/tmp/peer.json

--kind says how a frame becomes the model's input: letterboxed (aspect kept, black borders, centred) to the input's
square size, as RGB NHWC float32, then
  boxes      values 0..255 (the COCO CenterNet, 512x512)
  blazeface  values scaled to [-1, 1] (BlazeFace front, 128x128)
--frames takes image files and directories (every image in them, sorted by name). The frames are prepared once; the
timing covers session.run alone, cycling through them, after 3 warm-up runs. The session is ONNX Runtime's CPU
provider with all graph optimisations, --threads intra-op threads and one inter-op thread. The JSON written (and
printed) holds model, runs, p50_ms, p99_ms and mean_ms, plus kind, frames, threads and the onnxruntime version.

scripts/models/check_centernet.py imports letterbox, prepare and session from here, so that the installer's check of
the converted model runs it exactly as the benchmark does.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
WARMUP = 3


def letterbox(img, size):
    """img (PIL) scaled to fit a size x size square, aspect kept, centred on black. Returns the square and how to map
    a point in it back to img: (scale, pad_x, pad_y), original = (square - pad) / scale."""
    img = img.convert("RGB")
    scale = min(size / img.width, size / img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    pad_x, pad_y = (size - w) // 2, (size - h) // 2
    square = Image.new("RGB", (size, size))
    square.paste(img.resize((w, h), Image.BILINEAR), (pad_x, pad_y))
    return square, (scale, pad_x, pad_y)


def prepare(img, kind, size):
    """The input tensor [1, size, size, 3] float32 that a model of this kind expects for img."""
    square, _ = letterbox(img, size)
    x = np.asarray(square, dtype=np.float32)[np.newaxis]
    return x if kind == "boxes" else x / 127.5 - 1.0


def frame_paths(args):
    """Image files named by --frames: files as given, directories expanded to their images in name order."""
    paths = []
    for a in args:
        if os.path.isdir(a):
            paths += sorted(os.path.join(a, n) for n in os.listdir(a) if n.lower().endswith(IMAGE_EXTENSIONS))
        else:
            paths.append(a)
    if not paths:
        sys.exit("inference_peer.py: --frames names no images")
    return paths


def session(model, threads):
    """An ONNX Runtime session on the CPU provider, all graph optimisations, threads intra-op threads, one inter-op."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: the BlazeFace file's unused initializers draw warnings at every load
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description="ONNX Runtime (Python) timing of one model over frames")
    ap.add_argument("--model", required=True)
    ap.add_argument("--kind", required=True, choices=["boxes", "blazeface"])
    ap.add_argument("--frames", required=True, nargs="+", metavar="DIR_OR_FILE")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True, metavar="OUT")
    args = ap.parse_args()
    if args.runs < 1 or args.threads < 1:
        sys.exit("inference_peer.py: --runs and --threads must be positive")

    sess = session(args.model, args.threads)
    inp = sess.get_inputs()[0]
    size = inp.shape[1]  # NHWC, square: [1, size, size, 3]
    frames = [prepare(Image.open(p), args.kind, size) for p in frame_paths(args.frames)]

    for i in range(WARMUP):
        sess.run(None, {inp.name: frames[i % len(frames)]})
    times_ms = []
    for i in range(args.runs):
        feed = {inp.name: frames[i % len(frames)]}
        t0 = time.perf_counter()
        sess.run(None, feed)
        times_ms.append((time.perf_counter() - t0) * 1000)

    result = {
        "model": args.model,
        "kind": args.kind,
        "frames": len(frames),
        "threads": args.threads,
        "onnxruntime": ort.__version__,
        "runs": args.runs,
        "p50_ms": round(float(np.percentile(times_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(times_ms, 99)), 3),
        "mean_ms": round(float(np.mean(times_ms)), 3),
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
