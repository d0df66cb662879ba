#!/usr/bin/env python3
"""Makes the tiny reference checkpoints under tests/data/model/ and prints their logits.

tiny-gpt2: a random GPT-2 from Hugging Face transformers (vocab 64, 2 layers, n_embd 32, 4 heads),
every parameter perturbed so biases and layer norms matter, saved with save_pretrained
(config.json + model.safetensors, `transformer.` prefix, lm_head tied to wte).
tiny-lstm: a PyTorch embedding -> 2-layer nn.LSTM -> linear head with the names cadenza uses.

The printed logits are pasted into tests/it/model.rs. Run: python3 scripts/make_tiny_models.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "model")
IDS = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32, 63, 0]
ROWS = [0, 6, 13]


def show(name, logits):
    for r in ROWS:
        vals = ", ".join(f"{v:.6f}" for v in logits[r].tolist())
        print(f"// {name} position {r}\n[{vals}],")


def gpt2():
    torch.manual_seed(1234)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    out = os.path.join(ROOT, "tiny-gpt2")
    model.save_pretrained(out, safe_serialization=True)
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0]
    show("gpt2", logits)


class LstmLm(torch.nn.Module):
    def __init__(self, vocab, embd, hidden, layers):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, embd)
        self.lstm = torch.nn.LSTM(embd, hidden, layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids):
        y, _ = self.lstm(self.wte(ids))
        return self.head(y)


def lstm():
    torch.manual_seed(4321)
    model = LstmLm(64, 16, 24, 2).eval()
    out = os.path.join(ROOT, "tiny-lstm")
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"arch": "lstm", "vocab_size": 64, "n_embd": 16, "hidden_size": 24, "n_layer": 2, "dropout": 0.0},
                  f, indent=2)
    with torch.no_grad():
        logits = model(torch.tensor([IDS]))[0]
    show("lstm", logits)


if __name__ == "__main__":
    print(f"// torch {torch.__version__}")
    gpt2()
    lstm()
