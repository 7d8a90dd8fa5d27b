"""The detecting half of the Frigate-style peer of scripts/bench/inference.sh: FFmpeg decodes a camera's every frame and
hands raw frames at the detection rate to this process on stdin, which runs an ONNX model on each, as Frigate's
detect process does (Frigate: `ffmpeg ... -f rawvideo -pix_fmt yuv420p -vf fps=5,scale=W:H pipe:` into its detector).
Run with the venv scripts/install-models.sh makes (onnxruntime, numpy, pillow):

  ffmpeg -rtsp_transport tcp -i URL -f rawvideo -pix_fmt yuv420p -vf fps=5,scale=512:-2 pipe: | \
    assets/.venv/bin/python scripts/bench/frigate_peer.py --width 512 --height 288 --mode detect \
      --model assets/models/coco-centernet.onnx --kind boxes --report out.json

--mode detect runs the model on every frame: each yuv420p frame becomes RGB (BT.601, limited range, as FFmpeg's
default for this conversion) and then exactly what scripts/bench/inference_peer.py gives the model (`prepare`:
letterboxed to the input's square size), with its session (CPU provider, --threads intra-op threads). --mode read only
reads the frames and drops them (a still scene, where Frigate decodes every frame but runs no model). On SIGTERM or at
the end of its input it writes --report: frames read, the Unix time each arrived, and each inference's time in the model
(ms, session.run alone, as inference_peer.py measures it).
"""
import argparse
import json
import os
import signal
import sys
import time

import numpy as np


def yuv420p_to_rgb(buf, w, h):
    """One yuv420p frame (bytes) as an h x w x 3 uint8 RGB array (BT.601, limited range)."""
    a = np.frombuffer(buf, dtype=np.uint8)
    y = a[: w * h].reshape(h, w).astype(np.float32) - 16.0
    u = a[w * h : w * h + (w // 2) * (h // 2)].reshape(h // 2, w // 2).astype(np.float32) - 128.0
    v = a[w * h + (w // 2) * (h // 2) :].reshape(h // 2, w // 2).astype(np.float32) - 128.0
    u = u.repeat(2, axis=0).repeat(2, axis=1)
    v = v.repeat(2, axis=0).repeat(2, axis=1)
    y = 1.164 * y
    rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def read_exact(f, n):
    """n bytes from f, or None at the end of the input."""
    chunks, left = [], n
    while left:
        b = f.read(left)
        if not b:
            return None
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def main():
    ap = argparse.ArgumentParser(description="run an ONNX model on raw yuv420p frames from stdin (Frigate-style)")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--mode", choices=["detect", "read"], required=True)
    ap.add_argument("--model")
    ap.add_argument("--kind", choices=["boxes", "blazeface"], default="boxes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    if args.width % 2 or args.height % 2:
        sys.exit("frigate_peer.py: yuv420p needs an even width and height")
    if args.mode == "detect" and not args.model:
        sys.exit("frigate_peer.py: --mode detect needs --model")

    sess = inp = size = None
    if args.mode == "detect":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from PIL import Image
        from inference_peer import prepare, session

        sess = session(args.model, args.threads)
        inp = sess.get_inputs()[0]
        size = inp.shape[1]

    arrived, run_ms = [], []

    def report(*_):
        with open(args.report, "w") as f:
            json.dump({"mode": args.mode, "model": args.model, "threads": args.threads, "frames": len(arrived),
                       "arrived": arrived, "run_ms": run_ms}, f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    frame_bytes = args.width * args.height * 3 // 2
    stdin = sys.stdin.buffer
    while True:
        buf = read_exact(stdin, frame_bytes)
        if buf is None:
            break
        arrived.append(time.time())
        if sess is None:
            continue
        x = prepare(Image.fromarray(yuv420p_to_rgb(buf, args.width, args.height)), args.kind, size)
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        run_ms.append((time.perf_counter() - t0) * 1000)
    report()


if __name__ == "__main__":
    main()
