"""Generate text from an exported character LM with onnxruntime and numpy alone.

    seqlab export runs/shakespeare-<time> --onnx lm.onnx
    python -m seqlab.examples.onnx_generate lm.onnx --prompt "HAMLET:" --length 200

This file imports neither torch nor seqlab (copy it next to ``lm.onnx`` on a machine with
only ``pip install onnxruntime numpy``). The vocabulary comes from the file's metadata; the
graph maps ``tokens`` (B, T) and the state ``h0`` [``c0``] (L, B, H) to ``logits``
(B, T, V) and the new state, so the prompt is read in one call and every later call feeds
one token. ``--temperature 0`` picks the most likely character (greedy).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort

UNK = 3  # seqlab's vocabularies: <pad>, <bos>, <eos>, <unk> come first


def generate(path: str, prompt: str, length: int, temperature: float = 0.8, seed: int = 0) -> str:
    """``prompt`` continued by ``length`` characters (softmax(logits / T) sampling)."""
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    itos = json.loads(sess.get_modelmeta().custom_metadata_map["vocab"])
    stoi = {c: i for i, c in enumerate(itos)}
    ids = [stoi.get(c, UNK) for c in (prompt or "\n")]
    state = {
        i.name: np.zeros([1 if d == "B" else d for d in i.shape], np.float32)
        for i in sess.get_inputs()
        if i.name != "tokens"
    }
    names = [o.name for o in sess.get_outputs()]  # logits, h_n[, c_n]
    rng = np.random.default_rng(seed)
    tokens = np.array([ids], dtype=np.int64)
    out = []
    for _ in range(length):
        logits, *new = sess.run(names, {"tokens": tokens, **state})
        state = dict(zip(state, new, strict=True))
        z = logits[0, -1].astype(np.float64)
        if temperature == 0:
            nxt = int(z.argmax())
        else:
            p = np.exp((z - z.max()) / temperature)
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        out.append(nxt)
        tokens = np.array([[nxt]], dtype=np.int64)
    return prompt + "".join(itos[i] for i in out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="the .onnx file written by `seqlab export` (shakespeare run)")
    ap.add_argument("--prompt", default="ROMEO:\n")
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(generate(a.model, a.prompt.replace("\\n", "\n"), a.length, a.temperature, a.seed))


if __name__ == "__main__":
    main()
