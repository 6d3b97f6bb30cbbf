"""Train the shipped byte-level Llama on a text corpus (CPU, Debian's python3-torch).

Two stages, as the model card records: most steps on short windows (cheap), then a shorter
stage on long windows so attention has seen distances up to the context it will serve
(RoPE needs no learned table, but a model never trained on distance d attends poorly at d):

    /usr/bin/python3 tools/train.py ../shared/data/tinyshakespeare.txt --out tools/out/stage1.pt
    /usr/bin/python3 tools/train.py ../shared/data/tinyshakespeare.txt --init tools/out/stage1.pt \
        --seq 1024 --batch 4 --steps 300 --lr 1e-3 --warmup 20 --out tools/out/ckpt.pt

Deterministic for a given seed, corpus and thread count. Prints train/validation loss and
writes a checkpoint (weights + config + losses + timing) that tools/export.py turns into
the model directory.
"""
import argparse
import json
import math
import time
import torch
from llama import Llama, LlamaConfig

EOT = 256  # <|endoftext|>: the only token beyond the 256 bytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="path to the training corpus (UTF-8 text)")
    ap.add_argument("--out", default="tools/out/ckpt.pt")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--init", help="start from this checkpoint's weights (fresh optimizer)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    raw = open(args.data, "rb").read()
    data = torch.tensor(list(raw), dtype=torch.long)
    n = int(len(data) * 0.9)
    train, val = data[:n], data[n:]

    cfg = LlamaConfig()
    model = Llama(cfg)
    prior = None
    if args.init:
        prior = torch.load(args.init)
        model.load_state_dict(prior["state_dict"])
    nparams = sum(p.numel() for p in model.parameters())
    print(f"parameters: {nparams:,}  tokens: train {len(train):,} val {len(val):,}", flush=True)

    decay = [p for n_, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)

    def batch(split):
        src = train if split == "train" else val
        ix = torch.randint(len(src) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([src[i:i + args.seq] for i in ix])
        y = torch.stack([src[i + 1:i + 1 + args.seq] for i in ix])
        return x, y

    def loss_of(x, y):
        mask = torch.ones_like(x)
        pos = torch.arange(x.shape[1])[None].expand_as(x)
        logits, _ = model(x, mask, pos)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))

    @torch.no_grad()
    def evaluate(iters=20):
        model.eval()
        out = {}
        for split in ("train", "val"):
            out[split] = sum(loss_of(*batch(split)).item() for _ in range(iters)) / iters
        model.train()
        return out

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * frac))

    t0 = time.time()
    history = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = loss_of(*batch("train"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr_at(step):.2e} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            ev = evaluate()
            history.append({"step": step + 1, **ev, "seconds": round(time.time() - t0, 1)})
            print(f"eval step {step + 1}: train {ev['train']:.4f} val {ev['val']:.4f}", flush=True)
    elapsed = time.time() - t0
    stages = (prior.get("stages", []) if prior else []) + [{"args": vars(args), "seconds": round(elapsed, 1), "history": history}]
    total = sum(st["seconds"] for st in stages)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(), "history": history, "stages": stages,
                "params": nparams, "train_seconds": round(total, 1), "args": vars(args)}, args.out)
    print(json.dumps({"params": nparams, "train_seconds": round(total, 1), "final": history[-1]}))


if __name__ == "__main__":
    main()
