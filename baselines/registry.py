"""Methods by name, as `--method=` takes them: a reference method's name, an import path
`package.module:ClassName` of a `Method` subclass, or a saved encoder `saved:<path>`."""
from __future__ import annotations

import importlib

from baselines import micle, none, random_init, simclr, supervised
from baselines.api import Method
from baselines.saved import SavedBackbone

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    simclr.SimCLR, micle.MICLe, supervised.SupervisedBiT, none.NoPretraining, random_init.RandomInit)}


def get_method(spec: str) -> Method:
    """Returns a method by reference name (`METHODS`), by import path `package.module:ClassName`,
    or a saved backbone `saved:/path/to/encoder.keras` (or a SavedModel directory)."""
    if spec.startswith("saved:"):
        return SavedBackbone(spec[len("saved:"):])
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--method={spec}: cannot import {attr!r} from {module_name!r} ({e})") from e
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ValueError(f"--method={spec}: {attr!r} is not a subclass of baselines.api.Method")
        return cls()
    if spec not in METHODS:
        raise ValueError(f"--method={spec}: unknown method; expected one of {sorted(METHODS)} "
                         "or an import path package.module:ClassName")
    return METHODS[spec]()
