"""GPUs as the framework sees them: ``CUDA_VISIBLE_DEVICES`` and ``LOCAL_RANK`` mapped to NVML.

NVML numbers every GPU of the machine (PCI bus order) and ignores
``CUDA_VISIBLE_DEVICES``; CUDA, PyTorch and every launcher number only the
visible ones, from 0. :func:`select_gpus` turns a choice into NVML devices,
each keyed by the framework's index and carrying its UUID:

* ``"visible"``: every GPU ``CUDA_VISIBLE_DEVICES`` names, in its order, as
  ``gpu0``, ``gpu1``, ... (the framework's ``cuda:0``, ``cuda:1``). Entries are
  NVML indices, ``GPU-<uuid>`` (a unique prefix is enough, as for CUDA) or MIG
  instances (``MIG-GPU-<uuid>/<gi>/<ci>``, or ``MIG-<uuid>`` resolved through
  pynvml where the driver allows). CUDA stops at the first entry it cannot
  parse or find, and so does this. Unset: every GPU, NVML's order (which is
  CUDA's with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, and on machines of one GPU model).
* ``"local"``: the rank's own GPU, visible index ``LOCAL_RANK`` (torchrun,
  Slurm with ``SLURM_LOCALID``, MPI's ``OMPI_COMM_WORLD_LOCAL_RANK``), as the
  framework calls ``torch.cuda.set_device(local_rank)``; with one visible GPU
  per rank (Slurm ``--gpus-per-task=1``) that one. Without a local rank: as
  ``"visible"``.
* ``"all"``: every GPU NVML sees, keyed by NVML index (the behaviour before
  this module).
* a list of framework (visible) indices.

A MIG instance has no energy counter of its own: NVML reports the whole GPU's,
so its device is the parent GPU (``mig`` names the instance) and two ranks on
two instances of one GPU see the same energy — :mod:`jouletrace.integrations.distributed`
counts it once, by UUID.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import _core
from ..errors import InvalidArgumentError, SourceUnavailableError

__all__ = ["GpuDevice", "nvml_devices", "select_gpus", "local_rank", "describe", "LOCAL_RANK_VARIABLES"]

#: Environment variables that name the local rank, first found wins.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")


@dataclass(frozen=True)
class GpuDevice:
    """One GPU to sample: the framework's ``index`` and key, NVML's index, the UUID."""

    #: The framework's index (``cuda:<index>``); NVML's index for ``gpus="all"``.
    index: int
    nvml_index: int
    uuid: str
    name: str = ""
    #: The MIG instance asked for, if any (its energy is the whole GPU's).
    mig: str | None = None

    @property
    def key(self) -> str:
        """The device key of this GPU in results (``gpu<index>``)."""
        return f"gpu{self.index}"


def nvml_devices(library: str | os.PathLike[str] | None = None) -> list[tuple[int, str, str]]:
    """(NVML index, UUID, name) of every GPU the NVML library sees. Raises if NVML is unusable."""
    s = _core.Sampler.nvml(
        _core.NvmlOptions(library="" if library is None else os.fspath(library), source_name="nvml"),
        _core.SamplerConfig(rate_hz=1.0, max_records=16),
    )
    meta = dict(s.metadata)
    out = []
    for k, v in meta.items():
        if k.startswith("gpu") and k.endswith(".index"):
            dev = k[: -len(".index")]
            out.append((int(v), meta.get(f"{dev}.uuid", ""), meta.get(f"{dev}.name", "")))
    return sorted(out)


def local_rank(env: Mapping[str, str] | None = None) -> int | None:
    """This process's local rank from the launcher's environment, or None."""
    env = os.environ if env is None else env
    for var in LOCAL_RANK_VARIABLES:
        v = env.get(var)
        if v is not None and v.strip() != "":
            try:
                return int(v)
            except ValueError:
                raise InvalidArgumentError(f"{var}={v!r} is not an integer local rank") from None
    return None


def _parse_visible(
    value: str, devices: Sequence[tuple[int, str, str]], library: str | os.PathLike[str] | None
) -> list[tuple[int, str | None]]:
    """CUDA_VISIBLE_DEVICES -> [(NVML index, MIG instance or None)], stopping where CUDA stops."""
    out: list[tuple[int, str | None]] = []
    by_index = {d[0]: d for d in devices}
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            i = int(entry)
            if i not in by_index:
                break
            out.append((i, None))
            continue
        if entry.startswith("MIG-"):
            parent = _mig_parent(entry, library)
            if parent is None:
                raise SourceUnavailableError(
                    f"CUDA_VISIBLE_DEVICES names the MIG instance {entry!r}, whose GPU NVML does not say "
                    "(pynvml is missing: pip install 'jouletrace[nvml]'; or the driver does not resolve "
                    "MIG UUIDs); use gpus='all' or a list of NVML indices instead"
                )
            hit = [d for d in devices if d[1] == parent]
            if not hit:
                break
            out.append((hit[0][0], entry))
            continue
        uuid = entry if entry.startswith("GPU-") else None
        if uuid is None:
            break
        hit = [d for d in devices if d[1].startswith(uuid)]
        if len(hit) != 1:  # unknown, or an ambiguous prefix: CUDA stops here too
            break
        out.append((hit[0][0], None))
    return out


def _mig_parent(entry: str, library: str | os.PathLike[str] | None) -> str | None:
    """The parent GPU's UUID of a MIG instance named in CUDA_VISIBLE_DEVICES, or None."""
    # Driver < 470 form: MIG-GPU-<parent uuid>/<gpu instance>/<compute instance>.
    if entry.startswith("MIG-GPU-") and "/" in entry:
        return entry[len("MIG-") :].split("/", 1)[0]
    try:  # MIG-<uuid>: only NVML knows the parent.
        import pynvml

        if library is not None:
            pynvml.nvmlLib = ctypes.CDLL(os.fspath(library))
        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByUUID(entry)
            parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
            u = pynvml.nvmlDeviceGetUUID(parent)
            return u.decode() if isinstance(u, bytes) else str(u)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  (no pynvml, no MIG support: say so above)
        return None


def select_gpus(
    gpus: str | int | Sequence[int] = "visible",
    *,
    library: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    devices: Sequence[tuple[int, str, str]] | None = None,
) -> list[GpuDevice]:
    """The GPUs to sample for a choice (see the module docstring), keyed as the framework keys them.

    ``devices`` ((NVML index, UUID, name) of every GPU) defaults to what the
    NVML ``library`` reports; ``env`` to ``os.environ``. A parent GPU named
    twice (two MIG instances) is sampled once, under its first key.
    """
    env = os.environ if env is None else env
    if devices is None:
        devices = nvml_devices(library)
    by_index = {d[0]: d for d in devices}
    if gpus == "all":
        return [GpuDevice(i, i, u, n) for i, u, n in devices]
    if isinstance(gpus, str) and gpus not in ("visible", "local"):
        raise InvalidArgumentError(
            f"gpus must be 'visible', 'local', 'all', a list of indices or None, got {gpus!r}"
        )
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    visible = [(d[0], None) for d in devices] if cvd is None else _parse_visible(cvd, devices, library)
    if gpus == "local":
        rank = local_rank(env)
        if rank is None:
            wanted = list(range(len(visible)))
        elif len(visible) == 1:
            wanted = [0]
        else:
            wanted = [rank]
        what = f"local rank {rank}"
    else:
        wanted = list(range(len(visible))) if isinstance(gpus, str) else [int(g) for g in _as_list(gpus)]
        what = "asked for"
    out: list[GpuDevice] = []
    seen: set[int] = set()
    for fi in wanted:
        if not 0 <= fi < len(visible):
            raise InvalidArgumentError(
                f"GPU {fi} ({what}) is not visible: CUDA_VISIBLE_DEVICES={cvd!r} leaves "
                f"{len(visible)} GPU(s) visible to this process, indices 0..{len(visible) - 1}"
            )
        ni, mig = visible[fi]
        if ni in seen:
            continue
        seen.add(ni)
        _, uuid, name = by_index[ni]
        out.append(GpuDevice(fi, ni, uuid, name, mig))
    return out


def _as_list(gpus: int | Sequence[int]) -> list[int]:
    return [gpus] if isinstance(gpus, int) else list(gpus)


def describe(devs: Sequence[GpuDevice]) -> str:
    return ", ".join(f"{d.key}=NVML {d.nvml_index} ({d.uuid})" for d in devs)

