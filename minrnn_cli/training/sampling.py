"""Text sampling from a character language model (step mode: O(1) state per token for recurrent models)."""

from __future__ import annotations

import zlib

import torch

from minrnn_cli.errors import UserError


def sampler_seed(seed: int, prompt: str) -> int:
    """The sampler's seed: `seed` and the prompt together (CRC-32 of the prompt's UTF-8 bytes, not Python's
    per-process hash()), so a command repeats its text, another prompt gets its own draws rather than the
    same ones as every other prompt, and another seed another sample."""
    return (seed ^ zlib.crc32(prompt.encode("utf-8"))) % 2**32  # a CPU generator keeps 32 bits of its seed


def sample_text(model, codec, prompt: str, max_new_tokens: int, temperature: float,
                top_k: int | None, seed: int, device: torch.device, stream=None) -> str:
    """The prompt and `max_new_tokens` sampled tokens as text (`codec`: the model's tokenizer, from
    tasks.corpus.tokenizers), drawn with sampler_seed(seed, prompt). `stream`: a text file the prompt and then
    the text of each token are written to as they come (flushed), so a long sample is visibly working and an
    interrupted one keeps what was shown; a token that ends inside a character (bytes, byte-level BPE) waits
    for the rest of it."""
    if not prompt:
        raise UserError("prompt is empty: give at least one character, e.g. prompt='ROMEO:'")
    ids = codec.encode(prompt, what="prompt")
    idx = torch.tensor([ids.tolist()], device=device)
    generator = torch.Generator(device=device).manual_seed(sampler_seed(seed, prompt))
    model.eval()
    on_token = None
    if stream is not None:
        stream.write(prompt)
        drawn, shown = [], {"text": ""}

        def on_token(token: torch.Tensor) -> None:
            drawn.append(int(token[0]))
            text = codec.decode(drawn)
            if not text.endswith("\ufffd"):
                stream.write(text[len(shown["text"]):])
                stream.flush()
                shown["text"] = text

    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator,
                         on_token=on_token)
    if stream is not None:
        stream.write("\n")
        stream.flush()
    return prompt + codec.decode(out[0, len(ids):].tolist())
