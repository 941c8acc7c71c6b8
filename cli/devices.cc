// `shardload devices [--json]`: where loads can go: cpu, and every CUDA device the
// library's own CUDA runtime sees, described ("NVIDIA H200 (cuda:0, 139.8 GiB, PCIe
// Gen5 x16)"); with none, the reason the probe gave (no driver, or one too old for the
// CUDA 13 runtime: r580 or newer is needed), which other CUDA software in the same
// machine may not share. Exit 0; bad usage 2.
// --json prints {"devices":[{"device":"cpu"},{"device":"cuda:0","description":"..."}],
// "cuda_probe":null} or, without devices, "cuda_probe":{"code","message"}.
#include <iostream>
#include <string>

#include "cli/backend.h"
#include "cli/commands.h"
#include "cli/load_common.h"
#include "format/status.h"
#include "format/text.h"

namespace shardload::cli {
namespace {

constexpr char kDevicesUsage[] = "usage: shardload devices [--json]\n";

}  // namespace

int RunDevices(const Args& args) {
  bool json = false;
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << kDevicesUsage;
      return 0;
    }
    if (a != "--json") {
      return UsageError("devices", InvalidArgumentError("unexpected argument '" + a + "'"),
                        kDevicesUsage, args);
    }
    json = true;
  }
  DeviceBackend* backend = CliBackend();
  const int count = backend->DeviceCount();
  std::string text = "cpu\n";
  std::string list = "{\"device\":\"cpu\"}";
  for (int i = 0; i < count; ++i) {
    const std::string name = "cuda:" + std::to_string(i);
    Result<std::string> d = backend->DescribeDevice(i);
    const std::string description = d.ok() ? *d : d.status().ToString();
    text += name + "  " + description + "\n";
    list += ",{\"device\":" + JsonQuoted(name) + ",\"description\":" + JsonQuoted(description) + "}";
  }
  const Status probe = CliDeviceProbe();
  if (count == 0) text += "no CUDA device" + (probe.ok() ? std::string() : ": " + probe.ToString()) + "\n";
  if (json) {
    std::cout << "{\"devices\":[" << list << "],\"cuda_probe\":"
              << (probe.ok() ? std::string("null") : StatusJson(probe))
              << "}\n";
  } else {
    std::cout << text;
  }
  return 0;
}

}  // namespace shardload::cli
