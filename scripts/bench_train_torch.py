#!/usr/bin/env python3
"""PyTorch side of the training-speed comparison (see benches/train_speed.rs).

Same architectures, vocabulary, batch, sequence length and step (forward, cross-entropy,
backward, global-norm clipping at 1.0, AdamW with betas 0.9/0.99 and weight decay 0.01,
dropout 0.1 on embeddings and residuals, none on attention weights), on the CPU with 2 threads. GPT: Hugging Face GPT2LMHeadModel (default attention
implementation); LSTM: nn.Embedding -> nn.LSTM -> nn.Linear, the model `cadenza` trains.

Run: python3 scripts/bench_train_torch.py   (env ARCH=gpt|lstm|both, STEPS, VOCAB, THREADS and the
shape variables of the Rust bench: BATCH SEQ LAYERS DIM HEADS, LSTM_BATCH LSTM_SEQ LSTM_LAYERS LSTM_DIM HIDDEN)
"""
import os
import time

import torch

torch.set_num_threads(int(os.environ.get("THREADS", "2")))


def env(name, default):
    return int(os.environ.get(name, default))


class LstmLm(torch.nn.Module):
    def __init__(self, vocab, embd, hidden, layers, p):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, embd)
        self.drop = torch.nn.Dropout(p)
        self.lstm = torch.nn.LSTM(embd, hidden, layers, batch_first=True, dropout=p)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, ids):
        y, _ = self.lstm(self.drop(self.wte(ids)))
        return self.head(self.drop(y))


def bench(name, model, vocab, batch, seq, steps):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)
    params = sum(p.numel() for p in model.parameters())
    total = 0.0
    for step in range(steps + 2):
        x = torch.randint(0, vocab, (batch, seq))
        y = torch.randint(0, vocab, (batch, seq))
        start = time.perf_counter()
        out = model(x)
        logits = out.logits if hasattr(out, "logits") else out
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= 2:
            total += time.perf_counter() - start
    tps = batch * seq * steps / total
    print(f"torch {name}: {params} params, batch {batch} x seq {seq}: {1000 * total / steps:.1f} ms/step, "
          f"{tps:.0f} tokens/s ({torch.get_num_threads()} threads)")
    return tps


def main():
    arch = os.environ.get("ARCH", "both")
    vocab = env("VOCAB", 454)
    steps = env("STEPS", 5)
    torch.manual_seed(0)
    if arch in ("gpt", "both"):
        from transformers import GPT2Config, GPT2LMHeadModel
        seq = env("SEQ", 256)
        cfg = GPT2Config(vocab_size=vocab, n_positions=seq, n_embd=env("DIM", 192), n_layer=env("LAYERS", 4),
                         n_head=env("HEADS", 4), resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.0)
        bench("gpt", GPT2LMHeadModel(cfg), vocab, env("BATCH", 16), seq, steps)
    if arch in ("lstm", "both"):
        model = LstmLm(vocab, env("LSTM_DIM", 128), env("HIDDEN", 256), env("LSTM_LAYERS", 2), 0.1)
        bench("lstm", model, vocab, env("LSTM_BATCH", 32), env("LSTM_SEQ", 96), steps)


if __name__ == "__main__":
    main()
