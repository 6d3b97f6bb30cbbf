"""Quantize an exported decoder's weights to onnxruntime's MatMulNBits (block-wise int4 or int8).

    /usr/bin/python3 tools/quantize.py .cache/models/smollm2-135m/onnx/model.onnx            # -> model_q4.onnx
    /usr/bin/python3 tools/quantize.py --bits 8 .cache/models/smollm2-135m/onnx/model.onnx   # -> model_q8.onnx
    MODEL_DIR=.cache/models/smollm2-135m MODEL_FILE=onnx/model_q4.onnx npm start

Needs only Debian's python3-onnx and python3-numpy (no onnxruntime, no PyPI). Every MatMul whose
second input is a constant 2-D float weight [K, N] (an initializer, or a Cast and Transpose of one,
as in the float16 exports) becomes com.microsoft.MatMulNBits, which onnxruntime's CPU provider runs from
the packed weights without ever widening them back to a float32 matrix:

- B [N, K/block_size, block_size*bits/8] uint8: each output's weights in blocks of block_size
  along K, codes packed low bits first (4-bit: two per byte, the even index in the low nibble);
- scales [N * K/block_size] in the activations' type (float32 in these graphs);
- block_size (default 64): with a float32 scale per 64 weights a weight costs 4.5 bits (int4)
  or 8.5 bits (int8), exactly llama.cpp's Q4_0 and Q8_0 (a float16 scale per 32). MatMulNBits
  scales must be float32 here, and onnxruntime's kernel spends per block: at SmolLM2-135M
  size 64-weight blocks decode 10-17 % faster than 32-weight ones, for a small loss of
  fidelity at int4 (docs/models.md); --block-size 32 keeps it;
- no zero_points: symmetric blocks around the op's default zero point 2^(bits-1). The 4-bit
  scale is the block's largest-magnitude weight ÷ -8 (llama.cpp's Q4_0 rule), so that weight is
  exactly code 0 and the full range -8..7 is used; the 8-bit scale is max|w| ÷ 127.
- accuracy_level (default 4): 4 lets the CPU kernel quantize the activations to int8 per block
  and multiply in integers, the fastest path on x86; 0 keeps float activations.

The output projection (lm_head: a transposed copy of the embedding in kvserve's exports) is a
MatMul like the others and is quantized too, unless --keep-lm-head; the embedding table itself
is read by Gather, one row per token, and stays float. The new graph is written beside the input
with its weights in one external data file (<out>.data). K need not be a multiple of the block
size: the last block is padded with zeros, as the op's packing expects.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"


METADATA_KEY = "kvserve.quantize"


def settings_string(bits, block_size, accuracy_level, keep_lm_head):
    return f"bits={bits} block_size={block_size} accuracy_level={accuracy_level} lm_head={'float' if keep_lm_head else 'quantized'}"


def quantize_blocks(w_kn, bits, block_size):
    """[K, N] float weights -> (B uint8 [N, blocks, blob], scales float32 [N * blocks])."""
    k, n = w_kn.shape
    blocks = -(-k // block_size)
    wt = np.zeros((n, blocks * block_size), dtype=np.float32)
    wt[:, :k] = w_kn.T.astype(np.float32)
    wt = wt.reshape(n, blocks, block_size)
    zero = 1 << (bits - 1)
    if bits == 4:
        # Q4_0: the signed extreme maps to -8, so the block's largest magnitude is represented exactly.
        idx = np.abs(wt).argmax(axis=2)
        extreme = np.take_along_axis(wt, idx[..., None], axis=2)[..., 0]
        scale = extreme / -8.0
    else:
        scale = np.abs(wt).max(axis=2) / float(zero - 1)
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.rint(wt / safe[..., None]) + zero, 0, (1 << bits) - 1).astype(np.uint8)
    if bits == 4:
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    else:
        packed = q
    return packed, scale.astype(np.float32).reshape(-1)


def constant_weight(name, inits, producers):
    """(the float [K, N] array behind a MatMul's B input, [its initializer, Cast outputs...]), or None."""
    if name in inits:
        t = inits[name]
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(t.dims) == 2:
            return numpy_helper.to_array(t), [name]
        return None
    node = producers.get(name)
    if node is None:
        return None
    # The float16 exports store weights as float16 [N, K] and Cast + Transpose them in the graph.
    if node.op_type == "Cast" and next((a.i for a in node.attribute if a.name == "to"), None) == TensorProto.FLOAT:
        inner = constant_weight(node.input[0], inits, producers)
        if inner is not None:
            return inner[0].astype(np.float32), inner[1] + [name]
    if node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        inner = constant_weight(node.input[0], inits, producers)
        if inner is not None and perm == [1, 0]:
            return inner[0].T, inner[1] + [name]
    return None


def quantize_model(model, bits, block_size, accuracy_level, keep_lm_head, log):
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name for o in graph.output}

    new_nodes, new_inits = [], []
    replaced = 0
    float_bytes = quant_bytes = 0
    chain_inits, chain_casts = set(), set()
    for node in graph.node:
        if node.op_type != "MatMul" or (keep_lm_head and "lm_head" in node.name):
            new_nodes.append(node)
            continue
        found = constant_weight(node.input[1], inits, producers)
        if found is None:
            new_nodes.append(node)
            continue
        w, chain = found
        k, n = w.shape
        packed, scales = quantize_blocks(w, bits, block_size)
        base = node.input[1].replace(":", "_").replace("/", "_")
        b_name, s_name = f"{base}_Q{bits}", f"{base}_scales"
        new_inits.append(numpy_helper.from_array(packed, b_name))
        new_inits.append(numpy_helper.from_array(scales, s_name))
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], b_name, s_name],
                list(node.output),
                name=f"{node.name}_Q{bits}",
                domain=MS_DOMAIN,
                K=k,
                N=n,
                bits=bits,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
        )
        replaced += 1
        float_bytes += w.nbytes
        quant_bytes += packed.nbytes + scales.nbytes
        chain_inits.add(chain[0])
        chain_casts.update(chain[1:])
    # The float weights (and their Casts and Transposes) go when nothing else reads them: the tied embedding's
    # Gather reads its own initializer, not lm_head's transposed copy, so the embedding stays.
    while True:
        used = {i for nd in new_nodes for i in nd.input} | graph_outputs
        unused = [nd for nd in new_nodes if nd.op_type in ("Cast", "Transpose") and nd.output[0] in chain_casts and nd.output[0] not in used]
        if not unused:
            break
        new_nodes = [nd for nd in new_nodes if nd not in unused]
    used = {i for nd in new_nodes for i in nd.input} | graph_outputs
    kept_inits = [t for t in graph.initializer if t.name in used or t.name not in chain_inits]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + new_inits)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    # The settings, for whoever reads the file later (bench/lib/quant-model.ts re-quantizes on a change).
    props = {p.key: p.value for p in model.metadata_props}
    helper.set_model_props(model, {**props, METADATA_KEY: settings_string(bits, block_size, accuracy_level, keep_lm_head)})
    log(
        f"{replaced} MatMul -> MatMulNBits (bits={bits}, block_size={block_size}, accuracy_level={accuracy_level}): "
        f"{float_bytes / 2**20:.2f} MiB of float weights -> {quant_bytes / 2**20:.2f} MiB"
    )
    return replaced


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="an exported model.onnx (its external data beside it)")
    ap.add_argument("--out", help="output .onnx (default: model_q<bits>.onnx beside the input)")
    ap.add_argument("--bits", type=int, choices=(4, 8), default=4)
    ap.add_argument("--block-size", type=int, choices=(16, 32, 64, 128, 256), default=64, help="weights per scale along K (the sizes onnxruntime's kernel takes)")
    ap.add_argument("--accuracy-level", type=int, choices=(0, 1, 2, 3, 4), default=4)
    ap.add_argument("--keep-lm-head", action="store_true", help="leave the output projection in float")
    args = ap.parse_args(argv)

    out = args.out or os.path.join(os.path.dirname(args.model), f"model_q{args.bits}.onnx")
    model = onnx.load(args.model, load_external_data=True)
    log = lambda s: print(s, file=sys.stderr)
    if quantize_model(model, args.bits, args.block_size, args.accuracy_level, args.keep_lm_head, log) == 0:
        sys.exit(f"{args.model}: no MatMul with a constant weight to quantize")
    data = os.path.basename(out) + ".data"
    if os.path.exists(os.path.join(os.path.dirname(out) or ".", data)):
        os.remove(os.path.join(os.path.dirname(out) or ".", data))
    onnx.save_model(model, out, save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
    size = os.path.getsize(out) + os.path.getsize(os.path.join(os.path.dirname(out) or ".", data))
    log(f"wrote {out} and {data}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
