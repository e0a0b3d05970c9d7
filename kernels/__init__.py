"""Triton kernels and their launchers (installed as ``cxrfast.kernels``).

No autograd lives here: launchers take tensors, allocate outputs and launch. ``cxrfast.ops`` wraps
them into torch.library ops with registered backward formulas.
"""
