#!/usr/bin/env python3
"""Reference for benches/gen_speed.rs: the same GPT-2 configuration through Hugging Face `generate` on CPU.

Random weights (speed does not depend on them), 2 threads, KV cache on, sampling every token,
a fixed number of new tokens. Prints one JSON line per batch size so the Rust bench can read it.
Then the same decoding for an `nn.LSTM` language model (embedding, LSTM, linear head), stepped one
token at a time with its hidden state, the reference for the LSTM lines of the bench.
Usage: python3 scripts/bench_gen_torch.py [--layers 4 --dim 256 --heads 4 --vocab 512
       --positions 1024 --prompt 16 --new 256 --batches 1,16 --threads 2
       --lstm-layers 2 --lstm-embd 256 --lstm-hidden 512 (0: no LSTM)]
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--positions", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lstm-layers", type=int, default=2)
    ap.add_argument("--lstm-embd", type=int, default=256)
    ap.add_argument("--lstm-hidden", type=int, default=512)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=a.vocab,
        n_positions=a.positions,
        n_embd=a.dim,
        n_layer=a.layers,
        n_head=a.heads,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    for batch in [int(b) for b in a.batches.split(",")]:
        ids = torch.randint(3, a.vocab, (batch, a.prompt))
        kwargs = dict(
            max_new_tokens=a.new,
            min_new_tokens=a.new,
            do_sample=True,
            top_k=0,
            temperature=1.0,
            use_cache=True,
            pad_token_id=0,
            attention_mask=torch.ones_like(ids),
        )
        with torch.inference_mode():
            model.generate(ids, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
            best = float("inf")
            best_cpu = float("inf")
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                c0 = time.process_time()  # CPU time of every thread of this process
                model.generate(ids, **kwargs)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
        emit(a, "torch", params, batch, best, best_cpu)

        # The same decoding without `generate`'s machinery: the floor PyTorch itself sets.
        with torch.inference_mode():
            best = float("inf")
            best_cpu = float("inf")
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                c0 = time.process_time()
                out = model(input_ids=ids, use_cache=True)
                past = out.past_key_values
                for _ in range(a.new):
                    probs = torch.softmax(out.logits[:, -1, :], dim=-1)
                    nxt = torch.multinomial(probs, 1)
                    out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
        emit(a, "torch-loop", params, batch, best, best_cpu)

    if a.lstm_hidden > 0:
        lstm_reference(a)


class LstmLm(torch.nn.Module):
    """cadenza's LSTM language model: embedding, `nn.LSTM` (batch first), linear head."""

    def __init__(self, a):
        super().__init__()
        self.wte = torch.nn.Embedding(a.vocab, a.lstm_embd)
        self.lstm = torch.nn.LSTM(a.lstm_embd, a.lstm_hidden, a.lstm_layers, batch_first=True)
        self.head = torch.nn.Linear(a.lstm_hidden, a.vocab)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.wte(ids), state)
        return self.head(out[:, -1, :]), state


def lstm_reference(a):
    """Prompt, then `a.new` sampled tokens one at a time through the LSTM's state."""
    model = LstmLm(a).eval()
    params = sum(p.numel() for p in model.parameters())
    for batch in [int(b) for b in a.batches.split(",")]:
        ids = torch.randint(3, a.vocab, (batch, a.prompt))
        with torch.inference_mode():
            logits, state = model(ids)  # warm-up
            for _ in range(8):
                logits, state = model(torch.multinomial(torch.softmax(logits, dim=-1), 1), state)
            best = float("inf")
            best_cpu = float("inf")
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                c0 = time.process_time()
                logits, state = model(ids)
                for _ in range(a.new):
                    nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1)
                    logits, state = model(nxt, state)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
        emit(a, "torch-lstm", params, batch, best, best_cpu)


def emit(a, impl, params, batch, best, best_cpu):
    """One JSON line: best wall and CPU seconds of `a.repeats` runs."""
    line = {
        "impl": impl,
        "torch": torch.__version__,
        "params": params,
        "batch": batch,
        "new_tokens": a.new,
        "seconds": best,
        "tokens_per_s": batch * a.new / best,
        "cpu_seconds": best_cpu,
        "tokens_per_cpu_s": batch * a.new / best_cpu,
        "steps_per_s": a.new / best,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
