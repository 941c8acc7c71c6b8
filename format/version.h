// format/version.h — shardload's version, in one place for the library, the C API
// (sl_version) and the command (`shardload --version`).
//
//   std::printf("shardload %s\n", shardload::kVersion);   // "shardload 0.1.5"
#ifndef SHARDLOAD_FORMAT_VERSION_H_
#define SHARDLOAD_FORMAT_VERSION_H_

namespace shardload {

// kVersion: "MAJOR.MINOR.PATCH" of this source tree, NUL-terminated, static. It goes up
// with every addition to the C API (capi/shardload.h notes each function's "Added in").
inline constexpr char kVersion[] = "0.1.5";

}  // namespace shardload

#endif  // SHARDLOAD_FORMAT_VERSION_H_
