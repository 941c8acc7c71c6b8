// tests/malformed_corpus_test.cc — every MalformedCorpus() case through ParseBuffer
// (exact code and message, or the tensor count when valid), and the written corpus
// read back through ReadHeaderFile.
#include "tests/malformed_corpus.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

#include "format/header.h"

namespace shardload::testing {
namespace {

TEST(MalformedCorpusTest, EveryCaseHasTheExpectedOutcome) {
  std::vector<CorpusCase> corpus = MalformedCorpus();
  ASSERT_GE(corpus.size(), 100u);
  size_t valid = 0;
  for (const CorpusCase& c : corpus) {
    Result<Header> h = ParseBuffer(AsBytes(c.bytes), kCorpusLabel);
    EXPECT_EQ(h.status(), c.expected) << c.name << "\n  got: " << h.status().ToString()
                                      << "\n  want: " << c.expected.ToString();
    if (h.ok() && c.expected.ok()) {
      ++valid;
      EXPECT_EQ(h->tensors.size(), c.tensors) << c.name;
      EXPECT_EQ(h->by_name.size(), c.tensors) << c.name;
      EXPECT_EQ(h->data_start + h->data_size, c.bytes.size()) << c.name;
    }
  }
  EXPECT_GE(valid, 20u);  // the corpus keeps its tricky-but-valid cases
}

TEST(MalformedCorpusTest, NamesAreUniqueAndGrouped) {
  std::set<std::string> names;
  for (const CorpusCase& c : MalformedCorpus()) {
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate case name " << c.name;
    EXPECT_NE(c.name.find('/'), std::string::npos) << c.name;
  }
}

TEST(MalformedCorpusTest, WrittenFilesReadBackThroughReadHeaderFile) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ASSERT_NE(tmp, nullptr);
  std::string dir = std::string(tmp) + "/corpus";
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  ASSERT_TRUE(WriteMalformedCorpus(dir, {.include_large = false}).ok());
  size_t checked = 0;
  for (const CorpusCase& c : MalformedCorpus()) {
    if (c.large) continue;
    std::string file = c.name;
    for (char& ch : file) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-') ch = '_';
    }
    std::string path = dir + "/" + file + ".safetensors";
    Result<Header> h = ReadHeaderFile(path);
    // The label is now the path.
    Status want = c.expected;
    if (!want.ok()) {
      std::string m = want.message();
      ASSERT_EQ(m.rfind(kCorpusLabel, 0), 0u) << c.name;
      want = Status(want.code(), path + m.substr(kCorpusLabel.size()));
    }
    EXPECT_EQ(h.status(), want) << c.name << "\n  got: " << h.status().ToString();
    ++checked;
  }
  EXPECT_GE(checked, 90u);
}

TEST(MalformedCorpusTest, WriteIntoMissingFolderFailsWithThePath) {
  Status s = WriteMalformedCorpus("/nonexistent-shardload-dir", {.include_large = false});
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message().rfind("/nonexistent-shardload-dir/framing_empty_file.safetensors", 0), 0u)
      << s.message();
}

}  // namespace
}  // namespace shardload::testing
