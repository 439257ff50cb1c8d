#!/usr/bin/env python3
"""Drives the fake libnvidia-ml.so.1 through ctypes, one JSON command per stdin line, one JSON
result per stdout line. Used by test/fake-nvml/*.test.ts (no addon involved).

The library path is argv[1]; the config comes from NAVARCH_FAKE_NVML_CONFIG as usual."""
import ctypes
import json
import sys
import time

LIB_PATH = sys.argv[1]
lib = ctypes.CDLL(LIB_PATH)
libc = ctypes.CDLL(None)
libc.dlsym.restype = ctypes.c_void_p
libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


def fn(name, restype=ctypes.c_int):
    """Entry point through dlsym (ctypes' getattr crashes on an IFUNC that resolves to NULL)."""
    addr = libc.dlsym(lib._handle, name.encode())
    if not addr:
        raise LookupError(name)
    return ctypes.cast(addr, ctypes.CFUNCTYPE(restype))


class PciInfo(ctypes.Structure):
    _fields_ = [("busIdLegacy", ctypes.c_char * 16), ("domain", ctypes.c_uint), ("bus", ctypes.c_uint),
                ("device", ctypes.c_uint), ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * 32)]


class Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class MemoryV2(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("total", ctypes.c_ulonglong), ("reserved", ctypes.c_ulonglong),
                ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class Util(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class TempV(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("sensorType", ctypes.c_uint), ("temperature", ctypes.c_int)]


class EventData(ctypes.Structure):
    _fields_ = [("device", ctypes.c_void_p), ("eventType", ctypes.c_ulonglong), ("eventData", ctypes.c_ulonglong),
                ("gpuInstanceId", ctypes.c_uint), ("computeInstanceId", ctypes.c_uint)]


assert ctypes.sizeof(PciInfo) == 68 and ctypes.sizeof(MemoryV2) == 40 and ctypes.sizeof(EventData) == 32

handles = {}
sets = {}


def call(name, *args):
    return fn(name)(*args)


def handle(i):
    h = handles.get(i)
    return h if h is not None else ctypes.c_void_p(0)


def get_str(name, h, length=96):
    buf = ctypes.create_string_buffer(max(length, 1))
    rc = call(name, h, buf, ctypes.c_uint(length))
    return {"rc": rc, "value": buf.value.decode() if rc == 0 else None}


def get_uint(name, h, *pre):
    v = ctypes.c_uint(0)
    rc = call(name, h, *pre, ctypes.byref(v))
    return {"rc": rc, "value": v.value if rc == 0 else None}


def get_ull(name, h, *pre):
    v = ctypes.c_ulonglong(0)
    rc = call(name, h, *pre, ctypes.byref(v))
    return {"rc": rc, "value": v.value if rc == 0 else None}


def device_info(i):
    h = handle(i)
    out = {}
    out["name"] = get_str("nvmlDeviceGetName", h)
    out["uuid"] = get_str("nvmlDeviceGetUUID", h)
    out["serial"] = get_str("nvmlDeviceGetSerial", h, 32)
    out["minorNumber"] = get_uint("nvmlDeviceGetMinorNumber", h)
    out["index"] = get_uint("nvmlDeviceGetIndex", h)
    p = PciInfo()
    rc = call("nvmlDeviceGetPciInfo_v3", h, ctypes.byref(p))
    out["pci"] = {"rc": rc, "value": {"busId": p.busId.decode(), "busIdLegacy": p.busIdLegacy.decode(),
                                      "domain": p.domain, "bus": p.bus, "device": p.device,
                                      "pciDeviceId": p.pciDeviceId, "pciSubSystemId": p.pciSubSystemId}}
    m = Memory()
    rc = call("nvmlDeviceGetMemoryInfo", h, ctypes.byref(m))
    out["memory"] = {"rc": rc, "value": {"total": m.total, "free": m.free, "used": m.used}}
    m2 = MemoryV2(version=0x02000028)
    rc = call("nvmlDeviceGetMemoryInfo_v2", h, ctypes.byref(m2))
    out["memory_v2"] = {"rc": rc, "value": {"total": m2.total, "reserved": m2.reserved, "free": m2.free, "used": m2.used}}
    out["temperature"] = get_uint("nvmlDeviceGetTemperature", h, ctypes.c_uint(0))
    t = TempV(version=0x0100000C, sensorType=0)
    rc = call("nvmlDeviceGetTemperatureV", h, ctypes.byref(t))
    out["temperatureV"] = {"rc": rc, "value": t.temperature}
    out["power"] = get_uint("nvmlDeviceGetPowerUsage", h)
    out["powerLimit"] = get_uint("nvmlDeviceGetEnforcedPowerLimit", h)
    u = Util()
    rc = call("nvmlDeviceGetUtilizationRates", h, ctypes.byref(u))
    out["util"] = {"rc": rc, "value": {"gpu": u.gpu, "memory": u.memory}}
    out["smClock"] = get_uint("nvmlDeviceGetClockInfo", h, ctypes.c_uint(1))
    out["memClock"] = get_uint("nvmlDeviceGetClockInfo", h, ctypes.c_uint(2))
    try:
        out["eventReasons"] = get_ull("nvmlDeviceGetCurrentClocksEventReasons", h)
    except LookupError:
        out["eventReasons"] = {"rc": "missing", "value": None}
    out["throttleReasons"] = get_ull("nvmlDeviceGetCurrentClocksThrottleReasons", h)
    out["pstate"] = get_uint("nvmlDeviceGetPerformanceState", h)
    out["fan"] = get_uint("nvmlDeviceGetFanSpeed", h)
    out["persistence"] = get_uint("nvmlDeviceGetPersistenceMode", h)
    cur, pend = ctypes.c_uint(), ctypes.c_uint()
    rc = call("nvmlDeviceGetEccMode", h, ctypes.byref(cur), ctypes.byref(pend))
    out["ecc"] = {"rc": rc, "value": [cur.value, pend.value]}
    out["eccVolatileUncorrected"] = get_ull("nvmlDeviceGetTotalEccErrors", h, ctypes.c_uint(1), ctypes.c_uint(0))
    out["eccAggregateCorrected"] = get_ull("nvmlDeviceGetTotalEccErrors", h, ctypes.c_uint(0), ctypes.c_uint(1))
    out["dramUncorrected"] = get_ull("nvmlDeviceGetMemoryErrorCounter", h, ctypes.c_uint(1), ctypes.c_uint(0), ctypes.c_uint(2))
    cnt = ctypes.c_uint(0)
    rc = call("nvmlDeviceGetRetiredPages", h, ctypes.c_uint(1), ctypes.byref(cnt), None)
    out["retiredDbeSize"] = {"rc": rc, "value": cnt.value}
    out["retiredPending"] = get_uint("nvmlDeviceGetRetiredPagesPendingStatus", h)
    a, b, c, d = (ctypes.c_uint() for _ in range(4))
    rc = call("nvmlDeviceGetRemappedRows", h, ctypes.byref(a), ctypes.byref(b), ctypes.byref(c), ctypes.byref(d))
    out["remapped"] = {"rc": rc, "value": [a.value, b.value, c.value, d.value]}
    out["pcieReplay"] = get_uint("nvmlDeviceGetPcieReplayCounter", h)
    out["pcieGen"] = get_uint("nvmlDeviceGetCurrPcieLinkGeneration", h)
    out["pcieGenMax"] = get_uint("nvmlDeviceGetMaxPcieLinkGeneration", h)
    out["pcieWidth"] = get_uint("nvmlDeviceGetCurrPcieLinkWidth", h)
    out["pcieWidthMax"] = get_uint("nvmlDeviceGetMaxPcieLinkWidth", h)
    links = []
    for link in range(36):
        st = get_uint("nvmlDeviceGetNvLinkState", h, ctypes.c_uint(link))
        if st["rc"] != 0:
            links.append({"link": link, "rc": st["rc"]})
            continue
        crc = get_ull("nvmlDeviceGetNvLinkErrorCounter", h, ctypes.c_uint(link), ctypes.c_uint(3))
        links.append({"link": link, "rc": 0, "active": st["value"], "crcData": crc["value"]})
    out["nvlinks"] = links
    out["supportedEvents"] = get_ull("nvmlDeviceGetSupportedEventTypes", h)
    return out


def run(cmd):
    c = cmd["call"]
    if c == "dlsym":
        return {"found": bool(libc.dlsym(lib._handle, cmd["name"].encode()))}
    if c in ("nvmlInit_v2", "nvmlInit", "nvmlShutdown"):
        return {"rc": call(c)}
    if c == "nvmlInitWithFlags":
        return {"rc": call(c, ctypes.c_uint(cmd.get("flags", 0)))}
    if c == "errorString":
        f = fn("nvmlErrorString", ctypes.c_char_p)
        return {"value": f(ctypes.c_int(cmd["rc"])).decode()}
    if c == "system":
        out = {}
        for name in ("nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion"):
            buf = ctypes.create_string_buffer(80)
            rc = call(name, buf, ctypes.c_uint(cmd.get("len", 80)))
            out[name] = {"rc": rc, "value": buf.value.decode() if rc == 0 else None}
        v = ctypes.c_int()
        rc = call("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(v))
        out["cuda"] = {"rc": rc, "value": v.value}
        return out
    if c == "count":
        v = ctypes.c_uint()
        rc = call("nvmlDeviceGetCount_v2", ctypes.byref(v))
        return {"rc": rc, "value": v.value}
    if c == "handle":
        h = ctypes.c_void_p()
        rc = call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(cmd["index"]), ctypes.byref(h))
        if rc == 0:
            handles[cmd["index"]] = h
        return {"rc": rc}
    if c == "handleByUUID" or c == "handleByPci":
        h = ctypes.c_void_p()
        name = "nvmlDeviceGetHandleByUUID" if c == "handleByUUID" else "nvmlDeviceGetHandleByPciBusId_v2"
        rc = call(name, cmd["key"].encode(), ctypes.byref(h))
        idx = None
        if rc == 0:
            v = ctypes.c_uint()
            call("nvmlDeviceGetIndex", h, ctypes.byref(v))
            idx = v.value
        return {"rc": rc, "index": idx}
    if c == "info":
        return device_info(cmd["index"])
    if c == "str":
        return get_str(cmd["fn"], handle(cmd["index"]), cmd.get("len", 96))
    if c == "uint":
        return get_uint(cmd["fn"], handle(cmd["index"]), *[ctypes.c_uint(a) for a in cmd.get("args", [])])
    if c == "foreign":
        # a pointer that is not one of the library's handles, and a NULL out-pointer
        bogus = ctypes.c_void_p(0xdeadbeef)
        v = ctypes.c_uint()
        return {"foreign": call("nvmlDeviceGetPowerUsage", bogus, ctypes.byref(v)),
                "nullOut": call("nvmlDeviceGetPowerUsage", handle(0), None),
                "badIndex": call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(9999), ctypes.byref(ctypes.c_void_p())),
                "badClock": call("nvmlDeviceGetClockInfo", handle(0), ctypes.c_uint(7), ctypes.byref(v)),
                "badMemVersion": call("nvmlDeviceGetMemoryInfo_v2", handle(0), ctypes.byref(MemoryV2(version=2))),
                "unknownUUID": call("nvmlDeviceGetHandleByUUID", b"GPU-nope", ctypes.byref(ctypes.c_void_p()))}
    if c == "setCreate":
        s = ctypes.c_void_p()
        rc = call("nvmlEventSetCreate", ctypes.byref(s))
        if rc == 0:
            sets[cmd.get("name", "s")] = s
        return {"rc": rc}
    if c == "register":
        return {"rc": call("nvmlDeviceRegisterEvents", handle(cmd["index"]), ctypes.c_ulonglong(cmd["mask"]),
                           sets[cmd.get("name", "s")])}
    if c == "wait":
        ed = EventData()
        t0 = time.monotonic()
        name = "nvmlEventSetWait" if cmd.get("v1") else "nvmlEventSetWait_v2"
        rc = call(name, sets[cmd.get("name", "s")], ctypes.byref(ed), ctypes.c_uint(cmd["timeoutMs"]))
        elapsed = (time.monotonic() - t0) * 1000
        dev = None
        if rc == 0:
            for i, h in handles.items():
                if h.value == ed.device:
                    dev = i
        return {"rc": rc, "elapsedMs": elapsed, "type": ed.eventType, "data": ed.eventData,
                "gi": ed.gpuInstanceId, "ci": ed.computeInstanceId, "device": dev}
    if c == "drain":
        # waits until `count` events arrived or a wait returns something else
        ed = EventData()
        got, last = 0, 0
        while got < cmd["count"]:
            last = call("nvmlEventSetWait_v2", sets[cmd.get("name", "s")], ctypes.byref(ed), ctypes.c_uint(cmd.get("timeoutMs", 2000)))
            if last != 0:
                break
            got += 1
        return {"got": got, "rc": last}
    if c == "setFree":
        return {"rc": call("nvmlEventSetFree", sets.pop(cmd.get("name", "s")))}
    if c == "timed":
        t0 = time.monotonic()
        r = run(cmd["inner"])
        r["elapsedMs"] = (time.monotonic() - t0) * 1000
        return r
    raise ValueError("unknown call " + c)


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        res = run(json.loads(line))
    except Exception as e:  # reported to the test, never swallowed
        res = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(res), flush=True)
