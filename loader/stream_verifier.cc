// loader/stream_verifier.cc — recorded-XXH3 checks on streamed regions (see the header).
#include "loader/stream_verifier.h"

#include <algorithm>
#include <string>
#include <utility>

#include "format/text.h"

namespace shardload {
namespace {

std::string RegionText(const CopyRegion& r) {
  return "region [" + std::to_string(r.dst_offset) + ", +" + std::to_string(r.length) +
         ") of destination " + std::to_string(r.dest);
}

}  // namespace

StreamVerifier::StreamVerifier(RecordedChecksums sums, std::span<const Source> sources,
                               bool collect)
    : sums_(std::move(sums)),
      tensors_(new Tensor[sources.size()]),
      count_(sources.size()),
      collect_(collect) {
  for (size_t i = 0; i < sources.size(); ++i) {
    tensors_[i].source = sources[i];
    tensors_[i].recorded = sums_.Find(sources[i].name) != nullptr;
    if (tensors_[i].recorded) ++recorded_;
  }
}

Status StreamVerifier::Checked(size_t dest, uint64_t xxh3) {
  const Source& source = tensors_[dest].source;
  tensors_[dest].checked.store(true, std::memory_order_relaxed);
  Status s = sums_.CheckXxh3(source.name, source.bytes, xxh3);
  if (s.ok() || !collect_) return s;
  std::lock_guard<std::mutex> lock(mismatches_mu_);
  mismatches_.emplace_back(dest, HashMismatch{source.name, std::move(s)});
  return OkStatus();
}

std::vector<HashMismatch> StreamVerifier::TakeMismatches() {
  std::lock_guard<std::mutex> lock(mismatches_mu_);
  std::sort(mismatches_.begin(), mismatches_.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<HashMismatch> out;
  out.reserve(mismatches_.size());
  for (auto& [dest, m] : mismatches_) out.push_back(std::move(m));
  mismatches_.clear();
  return out;
}

Status StreamVerifier::Observe(const CopyRegion& region, std::span<const std::byte> bytes) {
  if (region.dest >= count_) return InternalError("verify: " + RegionText(region) + " names no tensor");
  Tensor& t = tensors_[region.dest];
  if (!t.recorded) return OkStatus();
  const uint64_t size = t.source.bytes;
  if (bytes.size() != region.length || region.dst_offset > size ||
      region.length > size - region.dst_offset) {
    return InternalError("verify: " + RegionText(region) + " does not fit tensor " +
                         QuoteNameForMessage(t.source.name) + " (" + std::to_string(size) +
                         " bytes)");
  }
  if (region.dst_offset == 0 && region.length == size) return Checked(region.dest, Xxh3(bytes));
  std::lock_guard<std::mutex> lock(t.mu);
  if (region.dst_offset < t.next) {
    return InternalError("verify: " + RegionText(region) + " of tensor " +
                         QuoteNameForMessage(t.source.name) + " was already hashed");
  }
  if (region.dst_offset > t.next) {
    if (!t.pending.emplace(region.dst_offset, std::vector<std::byte>(bytes.begin(), bytes.end()))
             .second) {
      return InternalError("verify: " + RegionText(region) + " of tensor " +
                           QuoteNameForMessage(t.source.name) + " arrived twice");
    }
    return OkStatus();
  }
  t.hasher.Update(bytes);
  t.next += bytes.size();
  for (auto it = t.pending.begin(); it != t.pending.end() && it->first == t.next;
       it = t.pending.erase(it)) {
    t.hasher.Update(it->second);
    t.next += it->second.size();
  }
  if (t.next == size) return Checked(region.dest, t.hasher.Digest());
  return OkStatus();
}

Status StreamVerifier::Finish() {
  for (size_t i = 0; i < count_; ++i) {
    Tensor& t = tensors_[i];
    if (!t.recorded) continue;
    if (t.source.bytes == 0) {
      SL_RETURN_IF_ERROR(Checked(i, Xxh3({})));
    } else if (!t.checked.load(std::memory_order_relaxed)) {
      if (t.next == 0 && t.pending.empty()) {
        return InternalError("verify: tensor " + QuoteNameForMessage(t.source.name) + " (" +
                             std::to_string(t.source.bytes) + " bytes) was never streamed");
      }
      return InternalError("verify: tensor " + QuoteNameForMessage(t.source.name) + " was streamed up to byte " +
                           std::to_string(t.next) + " of " + std::to_string(t.source.bytes));
    }
  }
  return OkStatus();
}

}  // namespace shardload
