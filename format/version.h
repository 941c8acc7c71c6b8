// format/version.h — shardload's version, in one place for the library, the C API
// (sl_version) and the command (`shardload --version`).
//
//   std::printf("shardload %s\n", shardload::kVersion);   // "shardload 0.1.12"
#ifndef SHARDLOAD_FORMAT_VERSION_H_
#define SHARDLOAD_FORMAT_VERSION_H_

namespace shardload {

// kVersion: "MAJOR.MINOR.PATCH" of this source tree, NUL-terminated, static. It goes up
// with every addition to the C API (capi/shardload.h notes each function's "Added in").
// Two other places state it and must change with it: sl_version's comment in
// capi/shardload.h and PACKAGE_VERSION in python/shardload/_lib.py (the Python package
// cannot ask the library which version it is meant for); python_shardload_test checks
// that all three agree.
inline constexpr char kVersion[] = "0.1.12";

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_VERSION_H_
