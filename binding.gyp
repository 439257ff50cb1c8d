{
  "targets": [
    {
      "target_name": "navarch_nvml",
      "sources": [
        "native/addon.cc",
        "native/library.cc",
        "native/errors.cc",
        "native/bridge.cc",
        "native/executor.cc",
        "native/devices.cc",
        "native/watcher.cc",
        "native/session.cc",
        "native/sd_notify.cc",
        "native/flock.cc",
        "native/kmsg_reader.cc"
      ],
      "include_dirs": [],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-isystem", "<!(node -p \"require('node-addon-api').include.slice(1, -1)\")", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wconversion", "-Wno-unused-parameter"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
