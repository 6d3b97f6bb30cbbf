"""Keep only a decoder's weight products: the least time onnxruntime's kernels need per decode step.

    /usr/bin/python3 tools/kernel_floor.py .cache/models/smollm2-135m/onnx/model.onnx /tmp/floor.onnx

Every MatMul whose second input is an initializer, and every MatMulNBits, is copied with its
weights into a graph of its own; each takes a one-row activation [1, K] from a graph input named
a_<K> and is a graph output. A decode step of one sequence reads each weight once, so timing this
graph with the service's session options gives what onnxruntime's matrix kernels cost on this
machine, apart from everything else the step runs (norms, rotary, attention, the graph's ~2,000
small operators). bench:quant reports each engine against it and against the memory bandwidth.
Weights go to one external data file beside the output (<out>.data).
"""
import os
import sys

import onnx
from onnx import TensorProto, helper


def weight_products(model):
    """The floor graph of `model` (loaded with its external data)."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes, kept, outputs, widths = [], {}, [], set()
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            k = next(a.i for a in node.attribute if a.name == "K")
            n = next(a.i for a in node.attribute if a.name == "N")
        elif node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            k, n = inits[node.input[1]].dims
        else:
            continue
        weights = [name for name in node.input[1:] if name]
        if not all(name in inits for name in weights):
            continue
        for name in weights:
            kept[name] = inits[name]
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[0] = f"a_{k}"
        copy.output[:] = [f"y{len(nodes)}"]
        nodes.append(copy)
        widths.add(k)
        outputs.append(helper.make_tensor_value_info(copy.output[0], TensorProto.FLOAT, [1, n]))
    inputs = [helper.make_tensor_value_info(f"a_{k}", TensorProto.FLOAT, [1, k]) for k in sorted(widths)]
    graph = helper.make_graph(nodes, "weight_products", inputs, outputs, list(kept.values()))
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version), len(nodes)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: kernel_floor.py <model.onnx> <out.onnx>")
    src, out = argv
    floor, count = weight_products(onnx.load(src, load_external_data=True))
    if count == 0:
        sys.exit(f"{src}: no MatMul with a constant weight")
    data = os.path.basename(out) + ".data"
    path = os.path.join(os.path.dirname(out) or ".", data)
    if os.path.exists(path):
        os.remove(path)
    onnx.save_model(floor, out, save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
    print(f"{count} weight products of {src} -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
