# kipvs_netns: run a JS callback with the calling thread inside another network namespace.
# Built by `make native` (native-bindings/native.mk) with the project's local node-gyp.
{
  "targets": [
    {
      "target_name": "kipvs_netns",
      "sources": ["src/netns.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra"],
      "cflags_cc": ["-Wall", "-Wextra"]
    }
  ]
}
