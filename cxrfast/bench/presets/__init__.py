"""Baselines of the presets' training steps: each paper's loss computed the way its released code (or, where
none is released, a straightforward research implementation) computes it — its loops over views, samples or
words, per-sample masking and dispatch — on the preset model's own modules, so that a benchmark compares
cxrfast's fused step against the original-style step on the same weights. One module per preset, each with
``baseline_loss(model, batch) -> torch.Tensor`` equal to ``model(batch)["loss"]`` to rounding (tested)."""
