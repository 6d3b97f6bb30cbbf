"""Export one tiny random-weight Llama in both present forms, for the runtime's tests.

    /usr/bin/python3 tools/export_fixture.py test/fixtures/tiny-llama

Writes <out>/new (present.* = the new tokens' keys and values, kvserve's export) and
<out>/concat (present.* = past + new, as Hugging Face Optimum exports decoders), each a model
directory. Same weights (seed 0), so both must give the same logits and the same text.
"""
import os
import sys
import torch
from llama import Llama, LlamaConfig
from export import export, write_metadata


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256)
    model = Llama(cfg).eval()
    for form in ("new", "concat"):
        for layer in model.layers:
            layer.self_attn.concat_past = form == "concat"
        d = os.path.join(out, form)
        os.makedirs(os.path.join(d, "onnx"), exist_ok=True)
        write_metadata(d, cfg)
        with torch.no_grad():
            export(model, os.path.join(d, "onnx", "model.onnx"), torch.float32, cfg, fold=True)
    print("exported", out)


if __name__ == "__main__":
    main()
