"""Baselines of the presets' training losses: each preset's total loss computed the way a straightforward
research implementation computes it (Python loops over samples, per-sample masking and dispatch), using the
model's own modules, so that a benchmark compares the same math at the same weights. One module per preset,
each with ``baseline_loss(model, batch) -> torch.Tensor`` equal to ``model(batch)["loss"]`` to rounding."""
