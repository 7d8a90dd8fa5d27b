"""Checks the converted COCO CenterNet by what it does, since its bytes may differ from one conversion to the next.
Run by scripts/install-models.sh with assets/.venv/bin/python (onnxruntime, numpy, pillow):

  check_centernet.py MODEL.onnx PHOTO LABELS

Prints the model's inputs and outputs, runs it on PHOTO letterboxed to the input's size exactly as
scripts/bench/inference_peer.py does (--kind boxes), prints the best detections (boxes mapped back to PHOTO's
pixels, names from LABELS, one COCO class a line, 0-based) and exits 1 unless one of them is a person (class 0)
scoring at least MIN_SCORE.
"""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from inference_peer import letterbox, prepare, session  # noqa: E402

PERSON, MIN_SCORE, SHOWN = 0, 0.5, 5


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model, photo, labels = sys.argv[1:]
    names = open(labels).read().splitlines()

    try:
        sess = session(model, 1)
    except Exception as e:  # a damaged file: one line, not a traceback
        sys.exit(f"check_centernet.py: {model}: {e}")
    for kind, values in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
        for v in values:
            print(f"  {kind} {v.name} {v.type} {v.shape}")
    inp = sess.get_inputs()[0]
    size = inp.shape[1]
    img = Image.open(photo)
    _, (scale, pad_x, pad_y) = letterbox(img, size)
    detections = sess.run(None, {inp.name: prepare(img, "boxes", size)})[0][0]  # [100, 6], best first

    print(f"  {os.path.basename(photo)} ({img.width}x{img.height}), best detections:")
    for x1, y1, x2, y2, score, cls in detections[np.argsort(-detections[:, 4])][:SHOWN]:
        # Back from the letterboxed square to the photo's pixels.
        box = [round(float(v)) for v in ((x1 - pad_x) / scale, (y1 - pad_y) / scale,
                                         (x2 - pad_x) / scale, (y2 - pad_y) / scale)]
        print(f"    {names[int(cls)]:<12} class {int(cls):2d}  score {score:.2f}  box {box}")
    person = detections[(detections[:, 5] == PERSON) & (detections[:, 4] >= MIN_SCORE)]
    if len(person) == 0:
        sys.exit(f"check_centernet.py: no person scoring {MIN_SCORE} or more in {photo}")


if __name__ == "__main__":
    main()
