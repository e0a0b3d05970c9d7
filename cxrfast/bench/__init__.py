"""Benchmark harness of the fused losses: baselines, named shape sets, timing/memory/roofline.

Used by ``cxrfast bench losses`` (cxrfast/cli.py) and the pytest-benchmark suite (benchmarks/).
Not imported by ``import cxrfast``; importing it imports torch but neither triton nor CUDA.

    baselines  what users run today (open_clip's ClipLoss pattern, VSE++'s masked max, GLoRIA's looped
               local loss), eager and compiled
    shapes     named shape sets per paper ("gpu", "cpu", "cpu-demo", "smoke"; "local-gpu", "local-cpu",
               "local-smoke" for the word–region loss)
    measure    timing (median, p20/p80), peak extra memory, roofline, OOM handling, environment metadata
"""
