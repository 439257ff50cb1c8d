"""Test-only stand-in for NVIDIA's pynvml (nvidia-ml-py), used by test/fake-nvml/gpu-check.test.ts
ONLY when the real package is not importable (PyPI is not reachable on the build machines).

It implements just the calls scripts/gpu-check/pynvml_dump.py makes, the way pynvml does them:
ctypes, the library opened by its soname "libnvidia-ml.so.1" (so LD_LIBRARY_PATH selects it),
NVMLError carrying the nvmlReturn_t in .value, strings returned as str. It lets the dump ->
compare pipeline run end to end against the fake library; on a GPU host the real pynvml is used."""
import ctypes

_lib = None


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


class _PciInfo(ctypes.Structure):
    _fields_ = [("busIdLegacy", ctypes.c_char * 16), ("domain", ctypes.c_uint), ("bus", ctypes.c_uint),
                ("device", ctypes.c_uint), ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * 32)]


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _check(rc):
    if rc != 0:
        raise NVMLError(rc)


def _fn(name):
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL("libnvidia-ml.so.1")
    return getattr(_lib, name)


def _string(name, *args, size=96):
    buf = ctypes.create_string_buffer(size)
    _check(_fn(name)(*args, buf, ctypes.c_uint(size)))
    return buf.value.decode()


def _uint(name, h):
    v = ctypes.c_uint()
    _check(_fn(name)(h, ctypes.byref(v)))
    return v.value


def nvmlInit():
    _check(_fn("nvmlInitWithFlags")(ctypes.c_uint(0)))


def nvmlShutdown():
    _check(_fn("nvmlShutdown")())


def nvmlSystemGetDriverVersion():
    return _string("nvmlSystemGetDriverVersion", size=80)


def nvmlSystemGetNVMLVersion():
    return _string("nvmlSystemGetNVMLVersion", size=80)


def nvmlSystemGetCudaDriverVersion():
    v = ctypes.c_int()
    _check(_fn("nvmlSystemGetCudaDriverVersion")(ctypes.byref(v)))
    return v.value


def nvmlSystemGetCudaDriverVersion_v2():
    v = ctypes.c_int()
    _check(_fn("nvmlSystemGetCudaDriverVersion_v2")(ctypes.byref(v)))
    return v.value


def nvmlDeviceGetCount():
    v = ctypes.c_uint()
    _check(_fn("nvmlDeviceGetCount_v2")(ctypes.byref(v)))
    return v.value


def nvmlDeviceGetHandleByIndex(index):
    h = ctypes.c_void_p()
    _check(_fn("nvmlDeviceGetHandleByIndex_v2")(ctypes.c_uint(index), ctypes.byref(h)))
    return h


def nvmlDeviceGetUUID(h):
    return _string("nvmlDeviceGetUUID", h)


def nvmlDeviceGetName(h):
    return _string("nvmlDeviceGetName", h)


def nvmlDeviceGetSerial(h):
    return _string("nvmlDeviceGetSerial", h, size=30)


def nvmlDeviceGetPciInfo(h):
    p = _PciInfo()
    _check(_fn("nvmlDeviceGetPciInfo_v3")(h, ctypes.byref(p)))
    return p


def nvmlDeviceGetMinorNumber(h):
    return _uint("nvmlDeviceGetMinorNumber", h)


def nvmlDeviceGetMemoryInfo(h):
    m = _Memory()
    _check(_fn("nvmlDeviceGetMemoryInfo")(h, ctypes.byref(m)))
    return m


def nvmlDeviceGetEnforcedPowerLimit(h):
    return _uint("nvmlDeviceGetEnforcedPowerLimit", h)


def nvmlDeviceGetMaxPcieLinkGeneration(h):
    return _uint("nvmlDeviceGetMaxPcieLinkGeneration", h)


def nvmlDeviceGetMaxPcieLinkWidth(h):
    return _uint("nvmlDeviceGetMaxPcieLinkWidth", h)


def nvmlDeviceGetEccMode(h):
    cur, pend = ctypes.c_uint(), ctypes.c_uint()
    _check(_fn("nvmlDeviceGetEccMode")(h, ctypes.byref(cur), ctypes.byref(pend)))
    return [cur.value, pend.value]


def nvmlDeviceGetPersistenceMode(h):
    return _uint("nvmlDeviceGetPersistenceMode", h)
