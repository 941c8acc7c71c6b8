// Tests of format/checksum.h: XXH3 vectors, streaming, hex, metadata encoding.
#include "format/checksum.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace shardload {
namespace {

// The input of xxHash's own sanity tests (xsum_sanity_check.c): byte i is the top
// byte of PRIME32 * PRIME64^i (mod 2^64).
std::vector<std::byte> SanityBuffer(size_t len) {
  std::vector<std::byte> buf(len);
  uint64_t gen = 2654435761ULL;
  for (size_t i = 0; i < len; ++i) {
    buf[i] = static_cast<std::byte>(gen >> 56);
    gen *= 11400714785074694797ULL;
  }
  return buf;
}

struct Vector {
  size_t len;
  uint64_t xxh3;
};

// XXH3_64bits(seed 0) values published with xxHash's sanity tests; they cover every
// internal path (0, 1-3, 4-8, 9-16, 17-128, 129-240 bytes and the long-input loop,
// with and without a partial stripe / block).
constexpr Vector kVectors[] = {
    {0, 0x2D06800538D394C2ULL},    {1, 0xC44BDFF4074EECDBULL},
    {6, 0x27B56A84CD2D7325ULL},    {12, 0xA713DAF0DFBB77E7ULL},
    {24, 0xA3FE70BF9D3510EBULL},   {48, 0x397DA259ECBA1F11ULL},
    {80, 0xBCDEFBBB2C47C90AULL},   {195, 0xCD94217EE362EC3AULL},
    {403, 0xCDEB804D65C6DEA4ULL},  {512, 0x617E49599013CB6BULL},
    {2048, 0xDD59E2C3A5F038E0ULL}, {2240, 0x6E73A90539CF2948ULL},
    {2367, 0xCB37AEB9E5D361EDULL},
};

TEST(Xxh3Test, KnownVectorsOneShot) {
  for (const Vector& v : kVectors) {
    EXPECT_EQ(Xxh3(SanityBuffer(v.len)), v.xxh3) << "len " << v.len;
  }
}

TEST(Xxh3Test, KnownVectorsStreamingByteAtATime) {
  for (const Vector& v : kVectors) {
    std::vector<std::byte> buf = SanityBuffer(v.len);
    Xxh3Hasher h;
    for (size_t i = 0; i < buf.size(); ++i) h.Update(std::span(buf).subspan(i, 1));
    EXPECT_EQ(h.Digest(), v.xxh3) << "len " << v.len;
    EXPECT_EQ(h.bytes_hashed(), v.len);
  }
}

TEST(Xxh3Test, StreamingEqualsOneShotForRandomSplits) {
  std::mt19937_64 rng(7);
  // Sizes around the internal buffer (256 B), stripe (64 B) and block (1 KiB) edges,
  // plus a few MiB-scale inputs as the loader produces.
  const size_t sizes[] = {0, 1, 3, 64, 240, 241, 255, 256, 257, 1023, 1024, 1025,
                          4096, 65537, 1 << 20, (3 << 20) + 17};
  for (size_t size : sizes) {
    std::vector<std::byte> buf(size);
    for (auto& b : buf) b = static_cast<std::byte>(rng());
    uint64_t want = Xxh3(buf);
    for (int trial = 0; trial < 5; ++trial) {
      Xxh3Hasher h;
      size_t pos = 0;
      while (pos < size) {
        size_t n = std::min<size_t>(size - pos, 1 + rng() % (trial < 2 ? 300 : 70000));
        h.Update(std::span(buf).subspan(pos, n));
        if (rng() % 4 == 0) h.Update({});  // empty pieces change nothing
        pos += n;
      }
      EXPECT_EQ(h.Digest(), want) << "size " << size << " trial " << trial;
    }
  }
}

TEST(Xxh3Test, DigestDoesNotDisturbStateAndResetRestarts) {
  std::vector<std::byte> buf = SanityBuffer(2367);
  Xxh3Hasher h;
  h.Update(std::span(buf).first(1000));
  uint64_t partial = h.Digest();
  EXPECT_EQ(partial, Xxh3(std::span(buf).first(1000)));
  Xxh3Hasher copy = h;  // continues independently
  h.Update(std::span(buf).subspan(1000));
  EXPECT_EQ(h.Digest(), 0xCB37AEB9E5D361EDULL);
  EXPECT_EQ(copy.Digest(), partial);
  copy.Update(std::span(buf).subspan(1000, 1367));
  EXPECT_EQ(copy.Digest(), 0xCB37AEB9E5D361EDULL);
  h.Reset();
  EXPECT_EQ(h.bytes_hashed(), 0u);
  EXPECT_EQ(h.Digest(), 0x2D06800538D394C2ULL);
  Xxh3Hasher assigned;
  assigned = copy;
  EXPECT_EQ(assigned.Digest(), 0xCB37AEB9E5D361EDULL);
}

TEST(Xxh3Test, FormatAndParse) {
  EXPECT_EQ(FormatXxh3(0x2D06800538D394C2ULL), "2d06800538d394c2");
  EXPECT_EQ(FormatXxh3(0), "0000000000000000");
  EXPECT_EQ(FormatXxh3(~0ULL), "ffffffffffffffff");
  EXPECT_EQ(*ParseXxh3("2d06800538d394c2"), 0x2D06800538D394C2ULL);
  EXPECT_EQ(*ParseXxh3("2D06800538D394C2"), 0x2D06800538D394C2ULL);
  EXPECT_EQ(*ParseXxh3("0000000000000001"), 1u);
  for (const char* bad : {"", "2d06800538d394c", "2d06800538d394c20", "2d06800538d394cg",
                          "0x06800538d394c2", " d06800538d394c2", "2d06800538d394c\n"}) {
    Result<uint64_t> r = ParseXxh3(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(),
              "'" + std::string(bad) + "' is not a 16-digit hex XXH3 value");
  }
}

TEST(ChecksumMetadataTest, RoundTripWithNastyNames) {
  using namespace std::string_literals;
  ChecksumMap hashes = {
      {"model.layers.0.self_attn.q_proj.weight", 0x0123456789abcdefULL},
      {"", 1},
      {"a=b;c=d", 2},
      {"quote\"back\\slash", 3},
      {"nul\0inside"s, 4},
      {"new\nline\ttab", 5},
      {"unicode \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 6},
      {"shardload.xxh3.nested", 7},
      {"__metadata__", 8},
      {std::string(5000, 'x'), ~0ULL},
  };
  std::map<std::string, std::string> md = {{"format", "pt"},
                                           {"shardload.xxh3", "not a checksum key"},
                                           {"shardload.xxh2.w", "other namespace"}};
  AddChecksumsToMetadata(hashes, md);
  EXPECT_EQ(md.size(), 3 + hashes.size());
  EXPECT_EQ(md.at("format"), "pt");
  EXPECT_EQ(md.at("shardload.xxh3.model.layers.0.self_attn.q_proj.weight"), "0123456789abcdef");
  EXPECT_EQ(md.at("shardload.xxh3.nul\0inside"s), "0000000000000004");
  EXPECT_EQ(md.at("shardload.xxh3.shardload.xxh3.nested"), "0000000000000007");

  Result<ChecksumMap> back = ParseChecksumMetadata(md, "m.safetensors");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, hashes);

  // Replacing keeps one entry per tensor.
  AddChecksumsToMetadata({{"", 99}}, md);
  EXPECT_EQ(md.at("shardload.xxh3."), "0000000000000063");
  EXPECT_EQ(md.size(), 3 + hashes.size());
}

TEST(ChecksumMetadataTest, NoChecksumsGivesEmptyMap) {
  Result<ChecksumMap> r = ParseChecksumMetadata({{"format", "pt"}, {"shardload", "x"}}, "f");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(ChecksumMetadataTest, MalformedValueIsDataLoss) {
  std::map<std::string, std::string> md = {{"shardload.xxh3.w1", "0000000000000001"},
                                           {"shardload.xxh3.w2", "zz"}};
  Result<ChecksumMap> r = ParseChecksumMetadata(md, "model-00001-of-00002.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(r.status().message(),
            "model-00001-of-00002.safetensors: __metadata__ key 'shardload.xxh3.w2': 'zz' is "
            "not a 16-digit hex XXH3 value");
  // An index's records live in its "metadata", not in a __metadata__.
  r = ParseChecksumMetadata(md, "model.safetensors.index.json", /*in_index=*/true);
  EXPECT_EQ(r.status(), DataLossError("model.safetensors.index.json: metadata key "
                                      "'shardload.xxh3.w2': 'zz' is not a 16-digit hex XXH3 "
                                      "value"));
}

TEST(ChecksumMetadataTest, CheckTensorChecksum) {
  EXPECT_TRUE(CheckTensorChecksum("m.safetensors", "w", 80, 12, 5, 5).ok());
  Status s = CheckTensorChecksum("m.safetensors", "layers.3.w", 80, 12, 0x2D06800538D394C2ULL,
                                 0x0123456789abcdefULL);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(),
            "m.safetensors: tensor 'layers.3.w' at bytes [80, 92): XXH3 of its 12 bytes is "
            "0123456789abcdef, recorded 2d06800538d394c2");
  // A record kept in the index: the tensor's own file still starts the message.
  s = CheckTensorChecksum("model-00002-of-00003.safetensors", "w", 1000, 24, 1, 2,
                          "model.safetensors.index.json");
  EXPECT_EQ(s, DataLossError("model-00002-of-00003.safetensors: tensor 'w' at bytes [1000, "
                             "1024): XXH3 of its 24 bytes is 0000000000000002, recorded "
                             "0000000000000001 in model.safetensors.index.json"));
}

}  // namespace
}  // namespace shardload
