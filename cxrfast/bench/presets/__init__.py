"""Per-preset benchmark baselines: one module per preset of cxrfast.models, each with
``baseline_loss(model, batch) -> torch.Tensor``, the preset's total loss computed the way its paper's
released code computes it (its loops, masks and materialised tensors), on the model's own layers, equal to
``model(batch)["loss"]`` to rounding (tests/models/test_<preset>.py checks that). The step benchmark
(issue 13 §3) times the preset against it."""
