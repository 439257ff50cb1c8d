// NVML status -> symbolic code mapping, and the plain failure record that crosses threads.
// Native threads only build `Failure` values; JS objects are made on the JS thread (ToJs).
#pragma once
#include <napi.h>

#include <string>

namespace navarch {

/** Symbolic name of an nvmlReturn_t ("NVML_ERROR_GPU_IS_LOST"); unknown values -> "NVML_ERROR_UNKNOWN_<n>". */
std::string StatusName(int status);

/** An error as reported to JS: code (symbolic), status (numeric, -1 for the addon's own), fn. */
struct Failure {
  std::string code;
  int status = -1;
  std::string fn;
  std::string message;

  static Failure FromStatus(int status, const std::string& fn, const char* libMessage = nullptr);
  static Failure Own(const std::string& code, const std::string& fn, const std::string& message);

  /** {code, status, fn, message} (the NvmlErrorInfo shape). */
  Napi::Object ToInfo(Napi::Env env) const;
  /** An Error with code/status/fn properties; src/nvml wraps it into NvmlError. */
  Napi::Error ToError(Napi::Env env) const;
};

}  // namespace navarch
