"""Optional dependencies, imported only when a feature needs them.

jouletrace needs only numpy at run time. Each optional module belongs to an
extra of the package (pyproject.toml), and a missing one raises an ImportError
that names the feature, the module and the ``pip install`` line that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> (extra, distribution that provides it)
EXTRAS: dict[str, tuple[str, str]] = {
    "pynvml": ("nvml", "nvidia-ml-py"),
    "pandas": ("pandas", "pandas"),
    "matplotlib": ("plot", "matplotlib"),
    "prometheus_client": ("prometheus", "prometheus-client"),
    "torch": ("torch", "torch"),
}


def missing_message(module: str, purpose: str) -> str:
    """What to say when ``module`` is missing for ``purpose``."""
    extra, dist = EXTRAS[module.split(".", 1)[0]]
    return (
        f"{purpose} needs the {module!r} module ({dist}), which is not installed here: "
        f"pip install 'jouletrace[{extra}]' (or pip install {dist})"
    )


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`, or a submodule of one) or raise an
    ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(missing_message(module, purpose)) from exc
