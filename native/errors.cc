// Mapping of nvmlReturn_t values (shared/reference/nvml-abi.md section 2) to stable names.
#include "errors.h"

namespace navarch {

std::string StatusName(int status) {
  switch (status) {
    case 0: return "NVML_SUCCESS";
    case 1: return "NVML_ERROR_UNINITIALIZED";
    case 2: return "NVML_ERROR_INVALID_ARGUMENT";
    case 3: return "NVML_ERROR_NOT_SUPPORTED";
    case 4: return "NVML_ERROR_NO_PERMISSION";
    case 5: return "NVML_ERROR_ALREADY_INITIALIZED";
    case 6: return "NVML_ERROR_NOT_FOUND";
    case 7: return "NVML_ERROR_INSUFFICIENT_SIZE";
    case 8: return "NVML_ERROR_INSUFFICIENT_POWER";
    case 9: return "NVML_ERROR_DRIVER_NOT_LOADED";
    case 10: return "NVML_ERROR_TIMEOUT";
    case 11: return "NVML_ERROR_IRQ_ISSUE";
    case 12: return "NVML_ERROR_LIBRARY_NOT_FOUND";
    case 13: return "NVML_ERROR_FUNCTION_NOT_FOUND";
    case 14: return "NVML_ERROR_CORRUPTED_INFOROM";
    case 15: return "NVML_ERROR_GPU_IS_LOST";
    case 16: return "NVML_ERROR_RESET_REQUIRED";
    case 17: return "NVML_ERROR_OPERATING_SYSTEM";
    case 18: return "NVML_ERROR_LIB_RM_VERSION_MISMATCH";
    case 19: return "NVML_ERROR_IN_USE";
    case 20: return "NVML_ERROR_MEMORY";
    case 21: return "NVML_ERROR_NO_DATA";
    case 22: return "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED";
    case 23: return "NVML_ERROR_INSUFFICIENT_RESOURCES";
    case 24: return "NVML_ERROR_FREQ_NOT_SUPPORTED";
    case 25: return "NVML_ERROR_ARGUMENT_VERSION_MISMATCH";
    case 26: return "NVML_ERROR_DEPRECATED";
    case 27: return "NVML_ERROR_NOT_READY";
    case 28: return "NVML_ERROR_GPU_NOT_FOUND";
    case 29: return "NVML_ERROR_INVALID_STATE";
    case 30: return "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED";
    case 999: return "NVML_ERROR_UNKNOWN";
    default: return "NVML_ERROR_UNKNOWN_" + std::to_string(status);
  }
}

Failure Failure::FromStatus(int status, const std::string& fn, const char* libMessage) {
  Failure f;
  f.code = StatusName(status);
  f.status = status;
  f.fn = fn;
  f.message = fn + ": " + f.code;
  if (libMessage != nullptr && libMessage[0] != '\0') f.message += " (" + std::string(libMessage) + ")";
  return f;
}

Failure Failure::Own(const std::string& code, const std::string& fn, const std::string& message) {
  Failure f;
  f.code = code;
  f.status = -1;
  f.fn = fn;
  f.message = message;
  return f;
}

Napi::Object Failure::ToInfo(Napi::Env env) const {
  Napi::Object o = Napi::Object::New(env);
  o.Set("code", code);
  o.Set("status", status);
  o.Set("fn", fn);
  o.Set("message", message);
  return o;
}

Napi::Error Failure::ToError(Napi::Env env) const {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  e.Set("status", Napi::Number::New(env, status));
  e.Set("fn", Napi::String::New(env, fn));
  return e;
}

}  // namespace navarch
