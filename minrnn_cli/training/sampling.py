"""Text sampling from a character language model (step mode: O(1) state per token for recurrent models)."""

from __future__ import annotations

import torch

from minrnn_cli.errors import UserError


def sample_text(model, chars: list[str], prompt: str, max_new_tokens: int, temperature: float,
                top_k: int | None, seed: int, device: torch.device, stream=None) -> str:
    """The prompt and `max_new_tokens` sampled characters. `stream`: a text file the prompt and then each
    character are written to as they come (flushed), so a long sample is visibly working and an interrupted
    one keeps what was shown."""
    index = {char: i for i, char in enumerate(chars)}
    unknown = sorted({char for char in prompt if char not in index})
    if unknown:
        raise UserError(f"prompt has characters outside the model's vocabulary: {''.join(unknown)!r}")
    if not prompt:
        raise UserError("prompt is empty: give at least one character, e.g. prompt='ROMEO:'")
    idx = torch.tensor([[index[char] for char in prompt]], device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    on_token = None
    if stream is not None:
        stream.write(prompt)

        def on_token(token: torch.Tensor) -> None:
            stream.write(chars[int(token[0])])
            stream.flush()

    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator,
                         on_token=on_token)
    if stream is not None:
        stream.write("\n")
        stream.flush()
    return "".join(chars[i] for i in out[0].tolist())
