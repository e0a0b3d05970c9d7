"""One decorator for every cxrfast op.

torch.library.triton_op lets torch.compile see (and fuse around) the Triton launches inside an op; it
imports triton when the op is defined, i.e. on first use of cxrfast.ops, never at `import cxrfast`.
Where triton is not installed (it is a Linux-only dependency) the same function is registered with
torch.library.custom_op: the chunked path needs nothing more.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import typing

import torch


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def no_autocast(fn):
    """Run an op's body with autocast off. Under torch.autocast a custom op's body would otherwise run with
    the caller's autocast on, and the chunked paths' fp32 products would silently drop to 16 bits (their
    results then also clash with the fp32 buffers they fill). The op keeps its inputs' dtypes: that is its
    contract, validated at its entry."""

    @functools.wraps(fn)
    def body(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device in ("cpu", "cuda"):
                if torch.is_autocast_enabled(device):
                    stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*args, **kwargs)

    # torch.library infers the schema from the signature: give the wrapper fn's, its annotations resolved
    # in fn's own module (they are strings under `from __future__ import annotations`)
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    body.__signature__ = sig.replace(
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()],
        return_annotation=hints.get("return", sig.return_annotation))
    body.__annotations__ = hints
    return body


def op(name: str):
    register = (torch.library.triton_op(name, mutates_args=()) if has_triton()
                else torch.library.custom_op(name, mutates_args=()))
    return lambda fn: register(no_autocast(fn))
