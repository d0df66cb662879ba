#!/usr/bin/env python3
"""Loss and gradients of one training step on the tiny reference models, for tests/it/model.rs.

Loads the checkpoints that scripts/make_tiny_models.py saved under tests/data/model/ (it does not
make new ones), computes the mean cross-entropy of predicting IDS[1:] from IDS[:-1] with dropout
off, back-propagates, and prints for every parameter the sum and the sum of absolute values of
its gradient, as Rust rows to paste beside the test. GPT-2's lm_head is tied to wte, so its
gradient is counted in wte's, as in cadenza.

Run: python3 scripts/tiny_model_grads.py
"""
import os

import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

# The same folder, ids and LSTM module as the script that made the checkpoints.
from make_tiny_models import IDS, ROOT, LstmLm


def report(name, model, logits):
    x = torch.tensor(IDS[1:])
    loss = torch.nn.functional.cross_entropy(logits[0], x)
    loss.backward()
    print(f"// {name}: loss {loss.item():.6f}")
    print(f"pub const {name.upper()}_LOSS: f32 = {loss.item():.6f};")
    print(f"pub const {name.upper()}_GRADS: &[(&str, f32, f32)] = &[")
    for n, p in model.named_parameters():
        if p.grad is None:
            continue
        n = n.removeprefix("transformer.")
        print(f'    ("{n}", {p.grad.sum().item():.6e}, {p.grad.abs().sum().item():.6e}),')
    print("];")


def main():
    print(f"// torch {torch.__version__}")
    gpt = GPT2LMHeadModel.from_pretrained(os.path.join(ROOT, "tiny-gpt2")).eval()
    report("gpt2", gpt, gpt(torch.tensor([IDS[:-1]])).logits)

    lstm = LstmLm(64, 16, 24, 2).eval()
    lstm.load_state_dict(load_file(os.path.join(ROOT, "tiny-lstm", "model.safetensors")))
    report("lstm", lstm, lstm(torch.tensor([IDS[:-1]])))


if __name__ == "__main__":
    main()
