"""Baselines of the model presets' training step: one module per preset (named as the preset) with
``baseline_loss(model, batch) -> torch.Tensor``, the preset's total loss computed the way the paper's released
code computes it (Python loops over samples, reports and tokens, B × B similarity matrices), on the model's own
encoders and projections, so that it equals ``model(batch)["loss"]`` to rounding and times what users ran."""
