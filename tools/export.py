"""Export a checkpoint from tools/train.py as a Hugging Face Optimum-style model directory.

    /usr/bin/python3 tools/export.py tools/out/ckpt.pt models/tiny-shakespeare
    /usr/bin/python3 tools/export.py --shape smollm2-135m .cache/models/smollm2-135m

--shape exports an untrained model of a named geometry (llama.SHAPES) instead: weights drawn
with the training initialisation (seed 0), for benchmarks at a realistic size (bench:peer).
Its vocabulary is the real model's size, 49,152 tokens, so that the embedding and the output
projection weigh what they do in the real model (28M of SmolLM2-135M's 135M parameters: a
byte vocabulary would drop a fifth of the weights every decode step reads, and shrink each
logits row 190-fold). The tokenizer is synthesized: ids 0-255 are the bytes and 256 is
<|endoftext|>, as in the shipped model, and ids 257 and up are filler tokens ("Ġfiller<id>",
decoding to " filler<id>"). There are no merges, so encoding only ever produces the byte
tokens (text costs one token per byte, as for the shipped model); the fillers exist only as
rows of the embedding and as outputs the random model may pick. No reference.json (it checks
trained logits).

Writes config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
onnx/model.onnx (float32) and onnx/model_fp16.onnx (float16 weights, KV cache and logits;
arithmetic stays float32 inside the graph), plus reference.json: logits computed by
PyTorch for a fixed text, which the test suite compares with onnxruntime's.

The graphs take Optimum's inputs, but their present.{i}.key|value outputs hold only the
new tokens' keys and values [batch, kv_heads, sequence_length, head_dim]: kvserve keeps
the cache itself, and a graph that concatenated and returned the whole cache copied it
twice per step (see Attention in llama.py).

Rotary embeddings are exported as onnxruntime's com.microsoft.RotaryEmbedding (cos/sin tables
of max_position_embeddings rows as constants) and every reshape with a constant target shape,
so a decode step runs about half the operators a plain trace gives (SmolLM2-135M's graph: 2,681
nodes instead of 5,329; docs/benchmarks.md has the step times). Such graphs need onnxruntime.
"""
import argparse
import json
import os
import torch
from torch import nn
from llama import SHAPES, Llama, LlamaConfig

EOT_ID = 256
EOT = "<|endoftext|>"
OPSET = 17
REFERENCE_TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}:\n{{ message['content'] }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:\n{% endif %}"
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map, as the ByteLevel pre-tokenizer uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json(vocab_size=EOT_ID + 1):
    # Token id == byte value: a BPE with the 256 byte symbols and no merges. Ids past
    # <|endoftext|> are fillers (see --shape above): "\u0120" is the byte map's space.
    byte_map = bytes_to_unicode()
    vocab = {byte_map[b]: b for b in range(256)}
    vocab[EOT] = EOT_ID
    for i in range(EOT_ID + 1, vocab_size):
        vocab[f"\u0120filler{i}"] = i
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": EOT_ID, "content": EOT, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": []},
    }


class OnnxDecoder(nn.Module):
    """Flat-argument wrapper: (ids, mask, positions, k0, v0, k1, v1, ...) -> (logits, k0', v0', ...)."""

    def __init__(self, model: Llama, io_dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.io_dtype = io_dtype

    def forward(self, input_ids, attention_mask, position_ids, *flat_past):
        # Casts only where the dtype changes: torch.onnx exports even a float32 -> float32
        # .to() as a Cast node, which copies its whole tensor on every step.
        def io(t):
            return t if t.dtype == self.io_dtype else t.to(self.io_dtype)

        def compute(t):
            return t if t.dtype == torch.float32 else t.float()

        past = [(compute(flat_past[i]), compute(flat_past[i + 1])) for i in range(0, len(flat_past), 2)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        out = [io(logits)]
        for k, v in presents:
            out += [io(k), io(v)]
        return tuple(out)


class HalfWeights(nn.Module):
    """Keeps a module's weights in float16 and casts them to float32 at use."""

    def __init__(self, linear_or_embedding):
        super().__init__()
        self.inner = linear_or_embedding
        self.w16 = nn.Parameter(linear_or_embedding.weight.detach().half(), requires_grad=False)
        del self.inner.weight

    def forward(self, x):
        self.inner.weight = self.w16.float()
        return self.inner(x)


def export(model, path, io_dtype, cfg, fold):
    """present.* hold the new tokens only, unless the model's attention has concat_past set."""
    L = cfg.num_hidden_layers
    present_axis = "total_sequence_length" if model.layers[0].self_attn.concat_past else "sequence_length"
    names_in = ["input_ids", "attention_mask", "position_ids"]
    names_out = ["logits"]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    for i in range(L):
        for kv in ("key", "value"):
            names_in.append(f"past_key_values.{i}.{kv}")
            names_out.append(f"present.{i}.{kv}")
            axes[f"past_key_values.{i}.{kv}"] = {0: "batch_size", 2: "past_sequence_length"}
            axes[f"present.{i}.{kv}"] = {0: "batch_size", 2: present_axis}
    b, s, p = 2, 3, 4
    ids = torch.randint(0, 256, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.long)
    pos = torch.arange(p, p + s)[None].expand(b, s).contiguous()
    past = [torch.zeros(b, cfg.num_key_value_heads, p, cfg.head_dim, dtype=io_dtype) for _ in range(2 * L)]
    torch.onnx.export(OnnxDecoder(model, io_dtype), (ids, mask, pos, *past), path,
                      input_names=names_in, output_names=names_out, dynamic_axes=axes,
                      opset_version=OPSET, do_constant_folding=fold, custom_opsets={"com.microsoft": 1})


def write_json(outdir, name, obj):
    with open(os.path.join(outdir, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_metadata(outdir, cfg):
    """config.json, generation_config.json, tokenizer.json and tokenizer_config.json."""
    write_json(outdir, "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "hidden_act": "silu",
        "tie_word_embeddings": True, "bos_token_id": EOT_ID, "eos_token_id": EOT_ID,
        "torch_dtype": "float32", "use_cache": True,
    })
    write_json(outdir, "generation_config.json", {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID, "do_sample": True,
                                                  "temperature": 0.8, "top_k": 40,
                                                  "max_length": cfg.max_position_embeddings})
    write_json(outdir, "tokenizer.json", tokenizer_json(cfg.vocab_size))
    write_json(outdir, "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT,
                                                 "eos_token": EOT, "unk_token": None, "add_bos_token": False,
                                                 "model_max_length": cfg.max_position_embeddings,
                                                 "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", help="checkpoint outdir, or outdir alone with --shape")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="export an untrained model of this geometry")
    args = ap.parse_args()
    if args.shape:
        if len(args.paths) != 1:
            ap.error("--shape takes only the output directory")
        args.outdir = args.paths[0]
        cfg = SHAPES[args.shape]
        torch.manual_seed(0)
        state_dict = Llama(cfg).state_dict()
    else:
        if len(args.paths) != 2:
            ap.error("expected a checkpoint and an output directory")
        args.checkpoint, args.outdir = args.paths
        ck = torch.load(args.checkpoint)
        cfg = LlamaConfig(**ck["config"])
        state_dict = ck["state_dict"]
    model = Llama(cfg)
    model.load_state_dict(state_dict)
    model.eval()
    os.makedirs(os.path.join(args.outdir, "onnx"), exist_ok=True)

    write_metadata(args.outdir, cfg)

    with torch.no_grad():
        export(model, os.path.join(args.outdir, "onnx", "model.onnx"), torch.float32, cfg, fold=True)
        half = Llama(cfg)
        half.load_state_dict(state_dict)
        half.eval()
        half.lm_head.weight = None
        for mod_name, mod in list(half.named_modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, (nn.Linear, nn.Embedding)) and child.weight is not None:
                    setattr(mod, child_name, HalfWeights(child))
        half.lm_head = HalfWeights(nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False))
        half.lm_head.w16 = half.embed_tokens.w16  # stay tied: one float16 copy
        for layer in half.layers:
            layer.self_attn.kv_round_dtype = torch.float16
        # No constant folding, so the Cast(float16 -> float32) of each weight stays in the
        # graph and the file holds float16 weights.
        export(half, os.path.join(args.outdir, "onnx", "model_fp16.onnx"), torch.float16, cfg, fold=False)

        if args.shape:
            print("exported", args.outdir)
            return
        ids = torch.tensor([list(REFERENCE_TEXT.encode("utf-8"))])
        n = ids.shape[1]
        logits, _ = model(ids, torch.ones_like(ids), torch.arange(n)[None])
        positions = [0, n // 2, n - 1]
        write_json(args.outdir, "reference.json", {"text": REFERENCE_TEXT, "input_ids": ids[0].tolist(), "positions": positions,
                                 "logits": [[round(x, 6) for x in logits[0, i].tolist()] for i in positions]})
    print("exported", args.outdir)


if __name__ == "__main__":
    main()
