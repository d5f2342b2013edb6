"""The model registry: every model's modes agree, baselines agree with each other, parameter counts."""

import pytest
import torch

from minrnn_cli.models import (
    MODEL_NAMES,
    build_classifier,
    build_lm,
    build_mixer,
    count_params,
)
from minrnn_cli.models.rnn_baselines import FusedGRU, FusedLSTM, LoopGRU, LoopLSTM

VOCAB = 11


def tiny_lm(name, **options):
    torch.manual_seed(0)
    options = {"d_model": 8, "n_layers": 2, "conv": True, "mlp": True, "mlp_ratio": 2, **options}
    if name == "transformer":
        options["n_heads"] = 2
    return build_lm(name, VOCAB, **options).double()


def loss_and_grads(model, logits):
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    return torch.autograd.grad((logits * weights).sum(), list(model.parameters()))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_step_mode_matches_parallel_outputs_and_gradients(name):
    model = tiny_lm(name)
    idx = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(1))
    parallel, _ = model(idx)
    state, stepped = None, []
    for t in range(idx.shape[1]):
        logits, state = model.step(idx[:, t], state)
        stepped.append(logits)
    stepped = torch.stack(stepped, 1)
    tol = 1e-9
    torch.testing.assert_close(stepped, parallel, rtol=tol, atol=tol)
    step_grads, parallel_grads = loss_and_grads(model, stepped), loss_and_grads(model, model(idx)[0])
    for g_step, g_par in zip(step_grads, parallel_grads, strict=True):
        torch.testing.assert_close(g_step, g_par, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_chunked_mode_matches_parallel(name):
    model = tiny_lm(name)
    idx = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(2))
    full, _ = model(idx)
    first, state = model(idx[:, :6])
    second, _ = model(idx[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-9, atol=1e-9)


def test_mamba_carries_state_by_steps():
    model = tiny_lm("mamba")
    idx = torch.randint(0, VOCAB, (2, 9))
    full, _ = model(idx)
    state = None
    for t in range(5):
        _, state = model.step(idx[:, t], state)
    rest, _ = model(idx[:, 5:], state)
    torch.testing.assert_close(rest, full[:, 5:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_generate_is_reproducible_and_continues_the_prompt(name):
    model = tiny_lm(name).eval()
    prompt = torch.randint(0, VOCAB, (2, 5))
    first = model.generate(prompt, 7, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(3))
    again = model.generate(prompt, 7, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(3))
    assert first.shape == (2, 12) and torch.equal(first[:, :5], prompt) and torch.equal(first, again)


def test_greedy_generation_equals_argmax_of_full_forward():
    model = tiny_lm("mingru").eval()
    out = model.generate(torch.tensor([[1, 2, 3]]), 6, temperature=0)
    logits, _ = model(out[:, :-1])
    assert torch.equal(logits[0, 2:].argmax(-1), out[0, 3:])


@pytest.mark.parametrize(("loop_class", "fused_class"), [(LoopGRU, FusedGRU), (LoopLSTM, FusedLSTM)])
def test_loop_baselines_compute_what_torch_rnns_compute(loop_class, fused_class):
    torch.manual_seed(0)
    fused, loop = fused_class(6).double(), loop_class(6).double()
    loop.load_state_dict(fused.rnn.state_dict())
    x = torch.randn(3, 17, 6, dtype=torch.float64)
    y_fused, state_fused = fused(x)
    y_loop, state_loop = loop(x)
    torch.testing.assert_close(y_loop, y_fused)
    torch.testing.assert_close(state_loop, state_fused)


def test_classifier_pools_the_last_real_position():
    torch.manual_seed(0)
    model = build_classifier("mingru", VOCAB, num_classes=3, d_model=8, n_layers=1).double()
    idx = torch.randint(0, VOCAB, (2, 10))
    short = model(idx[:1, :6])
    padded = model(idx[:1], lengths=torch.tensor([6]))
    torch.testing.assert_close(short, padded)
    assert build_classifier("gru", VOCAB, 3, pool="mean", d_model=8, n_layers=1)(idx).shape == (2, 3)


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'rnn'; choose one of mingru, minlstm, gru"):
        build_lm("rnn", VOCAB)
    with pytest.raises(ValueError, match="model 'gru' does not take option 'expansion'; it takes: d_model"):
        build_lm("gru", VOCAB, expansion=2)
    with pytest.raises(ValueError, match=r"dropout=1.5 is invalid: it must be in \[0, 1\)"):
        build_lm("mingru", VOCAB, dropout=1.5)
    with pytest.raises(ValueError, match="norm='batch' is invalid: choose one of rms, layer"):
        build_lm("mingru", VOCAB, norm="batch")
    with pytest.raises(ValueError, match="n_heads=0 is invalid: it must be an integer >= 1"):
        build_lm("transformer", VOCAB, n_heads=0)


@pytest.mark.parametrize("alpha", [1, 2, 3])
def test_parameter_counts_follow_the_paper(alpha):
    """Weights only (the paper ignores biases): minGRU 2 d_h d_x vs GRU 3 d_h (d_x + d_h);
    minLSTM 3 d_h d_x vs LSTM 4 d_h (d_x + d_h), with d_h = alpha * d_x."""
    d_x = 16
    d_h = alpha * d_x
    mingru = build_mixer("mingru", d_x, expansion=alpha)
    minlstm = build_mixer("minlstm", d_x, expansion=alpha)
    assert mingru.to_hidden.weight.numel() == 2 * d_h * d_x
    assert minlstm.to_hidden.weight.numel() == 3 * d_h * d_x
    gru, lstm = torch.nn.GRU(d_x, d_h), torch.nn.LSTM(d_x, d_h)
    gru_weights = gru.weight_ih_l0.numel() + gru.weight_hh_l0.numel()
    lstm_weights = lstm.weight_ih_l0.numel() + lstm.weight_hh_l0.numel()
    assert gru_weights == 3 * d_h * (d_x + d_h) and lstm_weights == 4 * d_h * (d_x + d_h)
    assert mingru.to_hidden.weight.numel() / gru_weights == pytest.approx(2 / (3 * (1 + alpha)))
    assert minlstm.to_hidden.weight.numel() / lstm_weights == pytest.approx(3 / (4 * (1 + alpha)))


@pytest.mark.parametrize(
    ("name", "ours", "official"), [("mingru", 227_136, 227_328), ("minlstm", 302_016, 302_208)]
)
def test_selective_copying_model_size_against_the_official_code(name, ours, official):
    """The authors' model builds a feed-forward norm in every layer even with the feed-forward off:
    3 layers x RMSNorm(64) = 192 parameters that never touch the output. We build none."""
    model = build_lm(name, 16, d_model=64, n_layers=3, expansion=6, learned_h0=True, norm="rms")
    assert count_params(model) == ours == official - 3 * 64
