// The CUDA probe, error mapping, option checks and the no-device paths of CudaBackend.
// These run on every machine: without a driver or device they check that everything
// degrades to DeviceCount() == 0 with clear errors; with a GPU they check the probe's
// findings instead.
#include <dlfcn.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_sink.h"
#include "cuda/runtime.h"
#include "cuda/status.h"
#include "loader/backend.h"
#include "loader/sink.h"

namespace shardload::cuda {
namespace {

// CUDA runtime error codes, as numbers so that this test needs no CUDA header.
constexpr int kCudaErrorInvalidValue = 1;
constexpr int kCudaErrorMemoryAllocation = 2;
constexpr int kCudaErrorInsufficientDriver = 35;
constexpr int kCudaErrorNoDevice = 100;
constexpr int kCudaErrorIllegalAddress = 700;

const Device kCuda0{Device::Kind::kCuda, 0};

TEST(CudaStatusTest, NamesCallDeviceAndCudaError) {
  EXPECT_TRUE(CudaCallStatus(0, "cudaMalloc", 0).ok());
  Status s = CudaCallStatus(kCudaErrorInvalidValue, "cudaMemcpyAsync", 0);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "cudaMemcpyAsync(cuda:0): cudaErrorInvalidValue: invalid argument");
  s = CudaCallStatus(kCudaErrorMemoryAllocation, "cudaMalloc", 3);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "cudaMalloc(cuda:3): cudaErrorMemoryAllocation: out of memory");
  s = CudaCallStatus(kCudaErrorNoDevice, "cudaGetDeviceCount", kNoDevice);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message().rfind("cudaGetDeviceCount: cudaErrorNoDevice: ", 0), 0u) << s.message();
  s = CudaCallStatus(kCudaErrorInsufficientDriver, "cudaGetDeviceCount", kNoDevice);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  s = CudaCallStatus(kCudaErrorIllegalAddress, "cudaStreamSynchronize", 1);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message().rfind("cudaStreamSynchronize(cuda:1): cudaErrorIllegalAddress: ", 0), 0u)
      << s.message();
  const std::string sticky = " (a sticky error: CUDA on this device is unusable in this "
                             "process until it restarts)";
  EXPECT_TRUE(s.message().ends_with(sticky)) << s.message();
  EXPECT_FALSE(CudaCallStatus(kCudaErrorMemoryAllocation, "cudaMalloc", 3).message().ends_with(sticky));
  EXPECT_EQ(CudaErrorName(987654), "cudaErrorUnknownCode(987654)");
  // No usable CUDA, in other words: a stub driver library (34), a driver too old for
  // the call (36), a driver daemon not running (802), the runtime unloading (4).
  for (int code : {34, 36, 802, 4}) {
    EXPECT_EQ(CudaCallStatus(code, "cudaSetDevice", 0).code(), StatusCode::kUnavailable) << code;
  }
  // The codes CUDA 13 marks "the process must be terminated and relaunched": a
  // contained error (226), a tensor memory leak (721), a terminated MPS client (810),
  // an external device's error (911).
  for (int code : {226, 721, 810, 911}) {
    EXPECT_TRUE(CudaCallStatus(code, "cudaStreamSynchronize", 0).message().ends_with(sticky))
        << code;
  }
}

TEST(CudaProbeTest, DeviceCountIsStableAndConsistent) {
  const int n = DeviceCount();
  EXPECT_GE(n, 0);
  EXPECT_EQ(DeviceCount(), n);
  CudaBackend backend;
  EXPECT_EQ(backend.name(), "cuda");
  EXPECT_EQ(backend.DeviceCount(), n);
  if (n == 0) {
    // No driver (cudaErrorInsufficientDriver) or no device: the probe says why.
    Status why = ProbeStatus();
    if (!why.ok()) {
      EXPECT_EQ(why.code(), StatusCode::kUnavailable);
      EXPECT_EQ(why.message().rfind("cudaGetDeviceCount: cudaError", 0), 0u) << why.message();
    }
    // With no driver library at all (as on the CPU-only build machines), the message
    // says so instead of calling the driver "insufficient".
    void* libcuda = ::dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (libcuda == nullptr) {
      EXPECT_EQ(why.message(),
                "cudaGetDeviceCount: cudaErrorInsufficientDriver: CUDA driver version is "
                "insufficient for CUDA runtime version (no NVIDIA driver is installed: "
                "libcuda.so.1 was not found)");
    } else {
      ::dlclose(libcuda);
    }
  } else {
    EXPECT_TRUE(ProbeStatus().ok());
  }
}

TEST(CudaProbeTest, DeviceOutOfRangeIsInvalidArgument) {
  const int n = DeviceCount();
  Result<DeviceProperties> props = GetDeviceProperties(n);
  ASSERT_FALSE(props.ok());
  EXPECT_EQ(props.status().code(), StatusCode::kInvalidArgument);
  const std::string prefix = "cuda:" + std::to_string(n) + ": no such CUDA device (" +
                             std::to_string(n) + (n == 1 ? " device" : " devices");
  EXPECT_EQ(props.status().message().rfind(prefix, 0), 0u) << props.status().message();
  EXPECT_FALSE(GetDeviceProperties(-1).ok());
  CudaBackend backend;
  Result<std::string> text = backend.DescribeDevice(n);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status(), props.status());
}

TEST(CudaProbeTest, DevicesDescribeThemselves) {
  const int n = DeviceCount();
  if (n == 0) GTEST_SKIP() << "no CUDA device: " << ProbeStatus().ToString();
  CudaBackend backend;
  for (int i = 0; i < n; ++i) {
    Result<DeviceProperties> props = GetDeviceProperties(i);
    ASSERT_TRUE(props.ok()) << props.status().ToString();
    EXPECT_EQ(props->index, i);
    EXPECT_FALSE(props->name.empty());
    EXPECT_GT(props->total_memory, uint64_t{1} << 30);
    EXPECT_GE(props->compute_major, 7);
    Result<std::string> text = backend.DescribeDevice(i);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(text->rfind(props->name + " (cuda:" + std::to_string(i) + ", ", 0), 0u) << *text;
    EXPECT_NE(text->find(" GiB"), std::string::npos) << *text;
    std::cout << "[ probe    ] " << *text << "\n";
  }
}

TEST(CudaBackendTest, AllocateWithoutDeviceIsAClearError) {
  const int n = DeviceCount();
  if (n > 0) GTEST_SKIP() << "a CUDA device exists; the no-device error cannot be observed";
  CudaBackend backend;
  Result<std::unique_ptr<DeviceAllocation>> a = backend.Allocate(kCuda0, 1024);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  std::string expected = "cuda:0: no such CUDA device (0 devices";
  Status why = ProbeStatus();
  if (!why.ok()) expected += ": " + why.message();
  expected += ")";
  EXPECT_EQ(a.status().message(), expected);

  Result<double> gbps = backend.MeasureHostToDeviceGBps(kCuda0, 1 << 20, 3);
  ASSERT_FALSE(gbps.ok());
  EXPECT_EQ(gbps.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(gbps.status().message(), expected);
}

TEST(CudaBackendTest, CpuDeviceAndBadArgumentsAreRejected) {
  CudaBackend backend;
  Result<std::unique_ptr<DeviceAllocation>> a = backend.Allocate(Device{}, 16);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.status().message(), "cpu: the CUDA backend serves cuda devices only");
  if (DeviceCount() > 0) {
    Result<double> r = backend.MeasureHostToDeviceGBps(kCuda0, 0, 3);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(),
              "measure host-to-device: 0 bytes is out of range 1..17179869184");
    r = backend.MeasureHostToDeviceGBps(kCuda0, 4096, 0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message(), "measure host-to-device: repeats 0 is out of range 1..1000");
  }
}

TEST(CudaBackendTest, OptionsAreValidatedNotClamped) {
  CudaBackendOptions bad;
  bad.streams_per_device = 0;
  Result<std::unique_ptr<CudaBackend>> b = CudaBackend::Create(bad);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.status().message(), "cuda backend streams_per_device 0 is out of range 1..16");
  bad.streams_per_device = 17;
  EXPECT_FALSE(CudaBackend::Create(bad).ok());
  ASSERT_TRUE(CudaBackend::Create(CudaBackendOptions()).ok());

  CudaBackend backend;
  struct Case {
    int count;
    uint64_t bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {0, 65536, "sink slot_count 0 is out of range 1..64"},
      {65, 65536, "sink slot_count 65 is out of range 1..64"},
      {4, 0, "sink slot_bytes 0 must be a multiple of 4096 in 4096..1073741824"},
      {4, 4095, "sink slot_bytes 4095 must be a multiple of 4096 in 4096..1073741824"},
      {4, 6000, "sink slot_bytes 6000 must be a multiple of 4096 in 4096..1073741824"},
      {4, (uint64_t{1} << 30) + 4096,
       "sink slot_bytes 1073745920 must be a multiple of 4096 in 4096..1073741824"},
  };
  for (const Case& c : cases) {
    SinkOptions o;
    o.slot_count = c.count;
    o.slot_bytes = c.bytes;
    Result<std::unique_ptr<Sink>> sink = backend.MakeSink(o);
    ASSERT_FALSE(sink.ok()) << c.message;
    EXPECT_EQ(sink.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(sink.status().message(), c.message);
  }
  SinkOptions ok;
  ok.slot_count = 64;
  ok.slot_bytes = 4096;
  EXPECT_TRUE(backend.MakeSink(ok).ok());

  CudaSinkOptions so;
  so.streams_per_device = 0;
  Result<std::unique_ptr<CudaSink>> s = CudaSink::Create(so);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "cuda sink streams_per_device 0 is out of range 1..16");
}

TEST(CudaBackendTest, SinkWithCudaDestinationWithoutDeviceFailsAtBegin) {
  if (DeviceCount() > 0) GTEST_SKIP() << "a CUDA device exists";
  CudaBackend backend;
  SinkOptions o;
  o.slot_count = 2;
  o.slot_bytes = 8192;
  Result<std::unique_ptr<Sink>> sink = backend.MakeSink(o);
  ASSERT_TRUE(sink.ok());
  std::vector<float> host(4);
  std::vector<Destination> dests(2);
  dests[0].ptr = host.data();
  dests[0].bytes = 16;
  dests[0].src_dtype = dests[0].dst_dtype = Dtype::kF32;
  dests[0].name = "on.host";
  dests[1].ptr = reinterpret_cast<void*>(uintptr_t{0x1000});
  dests[1].bytes = 16;
  dests[1].device = kCuda0;
  dests[1].src_dtype = dests[1].dst_dtype = Dtype::kF32;
  dests[1].name = "layers.0.w";
  Status s = (*sink)->Begin(dests, 8192);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  std::string expected = "tensor 'layers.0.w': cuda:0: no such CUDA device (0 devices";
  if (!ProbeStatus().ok()) expected += ": " + ProbeStatus().message();
  EXPECT_EQ(s.message(), expected + ")");
  // Nothing was allocated, and the sink is still usable for a host-only load.
  EXPECT_EQ(backend.cached_staging_bytes(), 0u);
  ASSERT_TRUE((*sink)->Begin(std::span<const Destination>(dests.data(), 1), 8192).ok());
  EXPECT_TRUE((*sink)->Finish().ok());
}

}  // namespace
}  // namespace shardload::cuda
