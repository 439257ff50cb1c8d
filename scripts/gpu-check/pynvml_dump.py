#!/usr/bin/env python3
"""Inventory and static fields of every GPU read through NVIDIA's Python binding (pynvml from
nvidia-ml-py), printed as the normalised JSON that scripts/gpu-check/compare.mjs compares with
the addon's dump (scripts/gpu-check/addon_dump.mjs).

Usage: python3 scripts/gpu-check/pynvml_dump.py [--out FILE]   (default: stdout)
A field NVML reports as unsupported (or any per-field NVML error) is null, as in the addon.
Exit status: 0 on success, 2 when pynvml is not importable, 1 when NVML cannot be initialised."""
import json
import sys

try:
    import pynvml
except ImportError as e:  # the caller decides whether that is a skip
    print(f"pynvml_dump: pynvml is not importable: {e}", file=sys.stderr)
    sys.exit(2)


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def field(fn, *args):
    """Value of one NVML query, or None when NVML returns an error for it."""
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def cuda_version():
    for name in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
        fn = getattr(pynvml, name, None)
        if fn is None:
            continue
        v = field(fn)
        if v is not None:
            return f"{v // 1000}.{(v % 1000) // 10}"
    return None


def bool_state(v):
    return None if v is None else bool(v)


def device(i):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    pci = field(pynvml.nvmlDeviceGetPciInfo, h)
    mem = field(pynvml.nvmlDeviceGetMemoryInfo, h)
    ecc = field(pynvml.nvmlDeviceGetEccMode, h)
    limit = field(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
    return {
        "index": i,
        "uuid": text(field(pynvml.nvmlDeviceGetUUID, h)),
        "name": text(field(pynvml.nvmlDeviceGetName, h)),
        "serial": text(field(pynvml.nvmlDeviceGetSerial, h)),
        "pciBusId": text(pci.busId).upper() if pci is not None else None,
        "minorNumber": field(pynvml.nvmlDeviceGetMinorNumber, h),
        "memoryTotalBytes": mem.total if mem is not None else None,
        "powerLimitW": limit / 1000 if limit is not None else None,
        "pcieLinkGenMax": field(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, h),
        "pcieLinkWidthMax": field(pynvml.nvmlDeviceGetMaxPcieLinkWidth, h),
        "eccModeCurrent": bool_state(ecc[0]) if ecc is not None else None,
        "eccModePending": bool_state(ecc[1]) if ecc is not None else None,
        "persistenceMode": bool_state(field(pynvml.nvmlDeviceGetPersistenceMode, h)),
    }


def main():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        print(f"pynvml_dump: nvmlInit failed: {e}", file=sys.stderr)
        return 1
    try:
        out = {
            "source": "pynvml",
            "system": {
                "driverVersion": text(field(pynvml.nvmlSystemGetDriverVersion)),
                "nvmlVersion": text(field(pynvml.nvmlSystemGetNVMLVersion)),
                "cudaDriverVersion": cuda_version(),
            },
            "devices": [device(i) for i in range(pynvml.nvmlDeviceGetCount())],
        }
    finally:
        pynvml.nvmlShutdown()
    rendered = json.dumps(out, indent=2) + "\n"
    if len(sys.argv) == 3 and sys.argv[1] == "--out":
        with open(sys.argv[2], "w") as f:
            f.write(rendered)
    elif len(sys.argv) == 1:
        sys.stdout.write(rendered)
    else:
        print("usage: pynvml_dump.py [--out FILE]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
