"""Optional dependencies, imported only when a feature needs them.

jouletrace needs only numpy at run time. Each optional module belongs to an
extra of the package (pyproject.toml), and a missing one raises an ImportError
that names the feature, the module and the ``pip install`` line that fixes it.
:func:`require` is the one place that says so; every lazy import of an optional
dependency goes through it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "missing_message", "require"]

# module -> (extra, distribution that provides it)
EXTRAS: dict[str, tuple[str, str]] = {
    "pynvml": ("nvml", "nvidia-ml-py"),
    "pandas": ("pandas", "pandas"),
    "matplotlib": ("plot", "matplotlib"),
    "prometheus_client": ("prometheus", "prometheus-client"),
    "torch": ("torch", "torch"),
    "pyarrow": ("stream", "pyarrow"),
}


def missing_message(module: str, purpose: str, hint: str = "") -> str:
    """What to say when ``module`` is missing for ``purpose`` (``hint``: another way out, appended)."""
    extra, dist = EXTRAS[module.split(".", 1)[0]]
    return (
        f"{purpose} needs the {module!r} module ({dist}), which is not installed here: "
        f"pip install 'jouletrace[{extra}]' (or pip install {dist})" + (f"; {hint}" if hint else "")
    )


def require(module: str, purpose: str, *, hint: str = "",
            error: type[Exception] = ImportError) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`, or a submodule of one) or raise ``error``
    (an ImportError unless a caller needs one of jouletrace's errors) naming ``purpose``, the
    module and the ``pip install 'jouletrace[extra]'`` line that provides it, then ``hint``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(missing_message(module, purpose, hint)) from exc
