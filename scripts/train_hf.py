#!/usr/bin/env python3
"""Trains cadenza's GPT-2 with PyTorch (Hugging Face transformers + accelerate) from `cadenza train --export`.

Two CPU cores are where cadenza's own trainer lives; with GPUs, export the encoded corpus and
train here, on one GPU or many (DDP through accelerate):

    cadenza train --corpus corpus/music21 --encoding tune --arch gpt --layers 8 --dim 512 \
        --heads 8 --context 1024 --out /tmp/unused --export data/folk --export-epochs 20
    accelerate launch scripts/train_hf.py data/folk models/folk-big --epochs 20 --batch 32
    cadenza generate --model models/folk-big --style irish -o tune.abc

The model is `GPT2LMHeadModel` built from the export's `config.json` (the shape `cadenza train`
would use), trained on windows of `context + 1` ids cut from each epoch's joined tunes (epoch k
reads `train-{k mod n}.u32`, so augmented copies are used in turn), with AdamW, warm-up and
cosine decay, validated on `valid.u32` every epoch, keeping the best weights. The output folder is
a cadenza model: `config.json`, `model.safetensors` (Hugging Face names, tied embeddings),
`vocab.json`, and `train_hf.json` with the losses. Tried on CPU with a tiny model:

    python3 scripts/train_hf.py data/folk /tmp/tiny --layers 1 --dim 32 --heads 2 --epochs 1 --max-steps 20
"""

import argparse
import json
import math
import os
import shutil
import time

import numpy as np
import torch
from accelerate import Accelerator
from transformers import GPT2Config, GPT2LMHeadModel


def read_ids(path):
    return np.fromfile(path, dtype="<u4").astype(np.int64)


def windows(ids, context, rng=None):
    """Start offsets of windows of context + 1 ids (overlapping by one), shuffled when rng is given."""
    starts = np.arange(0, max(len(ids) - context - 1, 0) + 1, context)
    if rng is not None:
        rng.shuffle(starts)
    return starts


def batches(ids, starts, context, batch):
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        x = np.stack([ids[s : s + context + 1] for s in chunk])
        yield torch.from_numpy(x)


@torch.no_grad()
def validate(model, ids, context, batch, accelerator):
    model.eval()
    total, count = 0.0, 0
    for x in batches(ids, windows(ids, context), context, batch):
        x = x.to(accelerator.device)
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += x[:, 1:].numel()
    model.train()
    return total / max(count, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", help="folder written by `cadenza train --export`")
    p.add_argument("out", help="model folder to write")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--patience", type=int, default=3, help="validations without improvement before stopping")
    p.add_argument("--layers", type=int, help="override the export's n_layer (e.g. a tiny trial)")
    p.add_argument("--dim", type=int, help="override n_embd")
    p.add_argument("--heads", type=int, help="override n_head")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    accelerator = Accelerator()
    torch.manual_seed(a.seed)
    meta = json.load(open(os.path.join(a.export, "export.json")))
    cfg = json.load(open(os.path.join(a.export, "config.json")))
    for key, value in (("n_layer", a.layers), ("n_embd", a.dim), ("n_head", a.heads)):
        if value is not None:
            cfg[key] = value
    context = meta["context"]
    config = GPT2Config(
        vocab_size=cfg["vocab_size"],
        n_positions=cfg["n_positions"],
        n_embd=cfg["n_embd"],
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        n_inner=cfg.get("n_inner"),
        activation_function=cfg.get("activation_function", "gelu_new"),
        layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-5),
        embd_pdrop=cfg.get("embd_pdrop", 0.1),
        attn_pdrop=cfg.get("attn_pdrop", 0.0),
        resid_pdrop=cfg.get("resid_pdrop", 0.1),
        scale_attn_weights=cfg.get("scale_attn_weights", True),
        scale_attn_by_inverse_layer_idx=cfg.get("scale_attn_by_inverse_layer_idx", False),
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config)
    decay = [p_ for n, p_ in model.named_parameters() if p_.dim() >= 2]
    no_decay = [p_ for n, p_ in model.named_parameters() if p_.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr,
        betas=(0.9, 0.99),
    )
    train_files = [os.path.join(a.export, f["file"]) for f in meta["train"]]
    valid = read_ids(os.path.join(a.export, meta["valid"]["file"]))
    per_epoch = len(windows(read_ids(train_files[0]), context)) // max(a.batch * accelerator.num_processes, 1) + 1
    total = a.max_steps or per_epoch * a.epochs

    def lr_at(step):
        if step < a.warmup:
            return (step + 1) / a.warmup
        t = min(1.0, (step - a.warmup) / max(total - a.warmup, 1))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model, opt, sched = accelerator.prepare(model, opt, sched)
    rng = np.random.default_rng(a.seed)
    history, best, bad, step, started = [], float("inf"), 0, 0, time.time()
    os.makedirs(a.out, exist_ok=True)
    for epoch in range(a.epochs):
        ids = read_ids(train_files[epoch % len(train_files)])
        starts = windows(ids, context, rng)
        # Each process takes its share of the windows (DDP).
        starts = starts[accelerator.process_index :: accelerator.num_processes]
        seen, loss_sum, loss_n = 0, 0.0, 0
        for x in batches(ids, starts, context, a.batch):
            x = x.to(accelerator.device)
            logits = model(input_ids=x[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
            accelerator.backward(loss)
            if a.clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            seen += x.numel()
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if a.max_steps and step >= a.max_steps:
                break
        val = validate(accelerator.unwrap_model(model), valid, context, a.batch, accelerator)
        secs = time.time() - started
        history.append({"epoch": epoch, "step": step, "train_loss": loss_sum / max(loss_n, 1), "val_loss": val, "secs": secs})
        accelerator.print(f"epoch {epoch} step {step}: train {loss_sum / max(loss_n, 1):.4f}, val {val:.4f} nats/id, {seen / max(secs, 1e-9):.0f} ids/s")
        if val < best:
            best, bad = val, 0
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(a.out, safe_serialization=True)
        else:
            bad += 1
            if a.patience and bad >= a.patience:
                break
        if a.max_steps and step >= a.max_steps:
            break
    if accelerator.is_main_process:
        shutil.copy(os.path.join(a.export, "vocab.json"), os.path.join(a.out, "vocab.json"))
        # transformers' own generation_config.json is not cadenza's (sampling defaults): drop it.
        hf_gen = os.path.join(a.out, "generation_config.json")
        if os.path.exists(hf_gen):
            os.remove(hf_gen)
        # cadenza reads `arch` beside Hugging Face's own fields.
        path = os.path.join(a.out, "config.json")
        saved = json.load(open(path))
        saved["arch"] = "gpt2"
        json.dump(saved, open(path, "w"), indent=2)
        json.dump(
            {"best_val_loss": best, "markov_nats_per_id": meta.get("markov_nats_per_id"), "history": history, "args": vars(a)},
            open(os.path.join(a.out, "train_hf.json"), "w"),
            indent=2,
        )
        accelerator.print(f"best validation {best:.4f} nats/id (Markov {meta.get('markov_nats_per_id')}); wrote {a.out}")


if __name__ == "__main__":
    main()
