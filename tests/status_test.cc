// tests/status_test.cc — Status helpers (format/status.h): prefixes, relabeling a
// path, errno mapping.
#include "format/status.h"

#include <cerrno>

#include "gtest/gtest.h"

namespace shardload {
namespace {

TEST(StatusTest, WithPrefixKeepsTheCode) {
  EXPECT_EQ(DataLossError("bad").WithPrefix("f.safetensors"), DataLossError("f.safetensors: bad"));
  EXPECT_TRUE(OkStatus().WithPrefix("f").ok());
}

TEST(StatusTest, RelabeledReplacesALeadingPath) {
  const Status s = InvalidArgumentError("/m/model-00001.safetensors: header is not valid JSON");
  EXPECT_EQ(s.Relabeled("/m/model-00001.safetensors", "model-00001.safetensors"),
            InvalidArgumentError("model-00001.safetensors: header is not valid JSON"));
  // Another message (or the path only as a prefix of a longer word) gets the label put
  // in front, the code kept.
  EXPECT_EQ(NotFoundError("no such file").Relabeled("/m/a", "a"), NotFoundError("a: no such file"));
  EXPECT_EQ(DataLossError("/m/ab: x").Relabeled("/m/a", "a"), DataLossError("a: /m/ab: x"));
  EXPECT_EQ(DataLossError("/m/a:x").Relabeled("/m/a", "a"), DataLossError("a: /m/a:x"));
  EXPECT_TRUE(OkStatus().Relabeled("/m/a", "a").ok());
}

TEST(StatusTest, ErrnoToStatusNamesTheError) {
  Status s = ErrnoToStatus(ENOENT, "f.safetensors: open");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message().rfind("f.safetensors: open: ", 0), 0u) << s.message();
}

}  // namespace
}  // namespace shardload
