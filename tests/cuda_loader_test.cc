// End to end through the public façade (loader/loader.h) with the CUDA backend: a
// safetensors file written by hand, loaded with LoadAll / LoadInto onto cuda:0 (and a
// device map splitting tensors between cuda:0 and cpu, and casts on the device), every
// tensor compared byte for byte with the file. Without a device the load must fail
// with the backend's clear error, which is checked here on every machine.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/runtime.h"
#include "loader/cast.h"
#include "loader/checkpoint.h"
#include "loader/device.h"
#include "loader/loader.h"

namespace shardload::cuda {
namespace {

struct FileTensor {
  std::string name;
  Dtype dtype;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// WriteCheckpoint: a single-file checkpoint with random bytes in each tensor; returns
// the data section and fills `tensors` with their offsets in it.
std::vector<std::byte> WriteCheckpoint(const std::string& path, std::vector<FileTensor>* tensors) {
  std::mt19937 rng(1234);
  uint64_t offset = 0;
  std::string json = "{";
  for (FileTensor& t : *tensors) {
    uint64_t elements = 1;
    for (uint64_t d : t.shape) elements *= d;
    t.begin = offset;
    t.end = offset + elements * DtypeBits(t.dtype) / 8;
    offset = t.end;
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) {
      shape += (i ? "," : "") + std::to_string(t.shape[i]);
    }
    if (json.size() > 1) json += ",";
    json += "\"" + t.name + "\":{\"dtype\":\"" + std::string(DtypeName(t.dtype)) +
            "\",\"shape\":[" + shape + "],\"data_offsets\":[" + std::to_string(t.begin) + "," +
            std::to_string(t.end) + "]}";
  }
  json += "}";
  while (json.size() % 8 != 0) json += " ";
  std::vector<std::byte> data(offset);
  for (auto& b : data) b = static_cast<std::byte>(rng() & 0xff);
  // Keep float payloads ordinary numbers in part so casts see rounding, not just NaNs.
  for (const FileTensor& t : *tensors) {
    if (t.dtype != Dtype::kF32) continue;
    for (uint64_t at = t.begin; at + 4 <= t.end; at += 8) {
      float f = static_cast<float>(rng() % 100000) / 977.0f - 50.0f;
      std::memcpy(data.data() + at, &f, 4);
    }
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t n = json.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  return data;
}

class CudaLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    path_ = std::string(tmp ? tmp : "/tmp") + "/cuda_loader_test_" + std::to_string(getpid()) +
            ".safetensors";
    tensors_ = {
        {"model.embed.weight", Dtype::kBF16, {257, 96}},
        {"model.layers.0.attn.q", Dtype::kF32, {96, 96}},
        {"model.layers.0.attn.bias", Dtype::kF32, {96}},
        {"model.layers.0.mlp.up", Dtype::kF16, {96, 300}},
        {"model.layers.0.norm", Dtype::kF32, {96}},
        {"model.step", Dtype::kI64, {}},
        {"model.mask", Dtype::kBOOL, {33}},
        {"lm_head.weight", Dtype::kBF16, {257, 96}},
    };
    data_ = WriteCheckpoint(path_, &tensors_);
  }
  void TearDown() override { std::remove(path_.c_str()); }

  const FileTensor& Stored(const std::string& name) const {
    for (const FileTensor& t : tensors_) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return tensors_[0];
  }

  // Contents: the bytes a loaded tensor holds (copied back from the device if needed).
  std::vector<std::byte> Contents(const Device& device, const void* data, uint64_t bytes) const {
    std::vector<std::byte> out(bytes);
    if (bytes == 0) return out;
    if (device.is_cuda()) {
      Status s = CopyDeviceToHost(device.index, out.data(), data, bytes);
      EXPECT_TRUE(s.ok()) << s.ToString();
    } else {
      std::memcpy(out.data(), data, bytes);
    }
    return out;
  }

  std::string path_;
  std::vector<FileTensor> tensors_;
  std::vector<std::byte> data_;
};

TEST_F(CudaLoaderTest, WithoutADeviceTheLoadFailsWithTheBackendsError) {
  if (DeviceCount() > 0) GTEST_SKIP() << "a CUDA device exists";
  Result<Checkpoint> ckpt = Checkpoint::Open(path_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  CudaBackend backend;
  LoadOptions options;
  options.backend = &backend;
  options.devices = *ParseDeviceMap("cuda:0");
  Result<LoadedCheckpoint> all = LoadAll(*ckpt, options);
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().code(), StatusCode::kInvalidArgument);
  std::string expected = "cuda:0: no such CUDA device (0 devices";
  if (!ProbeStatus().ok()) expected += ": " + ProbeStatus().message();
  expected += ")";
  EXPECT_EQ(all.status().message(), expected);
  // Host loads do not need the device at all, backend or not.
  options.devices = *ParseDeviceMap("cpu");
  Result<LoadedCheckpoint> host = LoadAll(*ckpt, options);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  EXPECT_EQ(host->tensors.size(), tensors_.size());
}

TEST_F(CudaLoaderTest, LoadAllOntoTheGpuAndSplitWithAHostByteExact) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device (" << ProbeStatus().ToString() << ")";
  Result<Checkpoint> ckpt = Checkpoint::Open(path_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  CudaBackend backend;
  for (const char* map : {"cuda:0", "lm_head.*=cpu,*norm*=cpu,cuda:0"}) {
    for (uint64_t slot : {uint64_t{4096}, uint64_t{64} << 20}) {
      SCOPED_TRACE(std::string(map) + " slot_bytes=" + std::to_string(slot));
      LoadOptions options;
      options.backend = &backend;
      options.devices = *ParseDeviceMap(map);
      options.sink.slot_bytes = slot;
      options.sink.slot_count = slot == 4096 ? 2 : 4;
      Result<LoadedCheckpoint> all = LoadAll(*ckpt, options);
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      ASSERT_EQ(all->tensors.size(), tensors_.size());
      for (const LoadedTensor& t : all->tensors) {
        const FileTensor& f = Stored(t.name);
        EXPECT_EQ(t.device, options.devices.Resolve(t.name)) << t.name;
        ASSERT_EQ(t.bytes, f.end - f.begin) << t.name;
        if (t.device.is_cuda()) {
          EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 256, 0u);
        }
        std::vector<std::byte> got = Contents(t.device, t.data, t.bytes);
        EXPECT_EQ(std::memcmp(got.data(), data_.data() + f.begin, t.bytes), 0) << t.name;
      }
    }
  }
}

TEST_F(CudaLoaderTest, LoadIntoDeviceBuffersWithCastsOnTheGpu) {
  if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device (" << ProbeStatus().ToString() << ")";
  Result<Checkpoint> ckpt = Checkpoint::Open(path_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  CudaBackend backend;
  // Every float tensor is asked for as another float dtype; the rest as stored.
  auto wanted = [](Dtype d) {
    switch (d) {
      case Dtype::kF32: return Dtype::kBF16;
      case Dtype::kBF16: return Dtype::kF16;
      case Dtype::kF16: return Dtype::kF32;
      default: return d;
    }
  };
  std::vector<std::unique_ptr<DeviceAllocation>> buffers;
  std::vector<Target> targets;
  for (const FileTensor& f : tensors_) {
    const Dtype d = wanted(f.dtype);
    uint64_t elements = 1;
    for (uint64_t x : f.shape) elements *= x;
    Result<std::unique_ptr<DeviceAllocation>> b =
        backend.Allocate(Device{Device::Kind::kCuda, 0}, elements * DtypeBits(d) / 8);
    ASSERT_TRUE(b.ok());
    targets.push_back(Target{f.name, d, f.shape, Device{Device::Kind::kCuda, 0}, (*b)->data()});
    buffers.push_back(std::move(b).value());
  }
  LoadOptions options;
  options.backend = &backend;
  options.match.allow_cast = true;
  options.sink.slot_bytes = 8192;
  options.sink.slot_count = 3;
  Result<LoadResult> r = LoadInto(*ckpt, targets, options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; i < targets.size(); ++i) {
    const FileTensor& f = tensors_[i];
    const uint64_t bytes = buffers[i]->size();
    std::vector<std::byte> got = Contents(Device{Device::Kind::kCuda, 0}, buffers[i]->data(), bytes);
    std::vector<std::byte> want(bytes);
    const uint64_t elements = (f.end - f.begin) * 8 / DtypeBits(f.dtype);
    ASSERT_TRUE(CastElements(f.dtype, targets[i].dtype, data_.data() + f.begin, elements,
                             want.data())
                    .ok());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), bytes), 0) << f.name;
  }
}

}  // namespace
}  // namespace shardload::cuda
