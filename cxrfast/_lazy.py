"""Package attributes that resolve on first use, so that importing a package imports none of its modules
(cxrfast, cxrfast.data, cxrfast.models, cxrfast.train, cxrfast.eval):

    _LAZY = {"pretrain": ("cxrfast.train.loop", "pretrain"), ...}
    __getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, submodules=("loop",))
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, names: dict, submodules=()):
    """(__getattr__, __dir__, __all__) for `package`: names maps an attribute to (module, attribute in it);
    submodules are imported as package.<name>. A resolved value is kept in the package's namespace, so each
    name is looked up once."""
    subs = frozenset(submodules)
    exported = sorted(names) + sorted(subs)

    def __getattr__(name):
        if name in names:
            module, attr = names[name]
            value = getattr(importlib.import_module(module), attr)
        elif name in subs:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return exported

    return __getattr__, __dir__, exported
