// A map from addresses to small values, by open addressing: for the lists of
// hundreds of tensors an optimizer step passes, a lookup costs a multiply and
// usually one probe, where std::unordered_map allocates a node per entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace fused_linreg {

template <typename Value>
class PointerMap {
 public:
  // Room for `expected` keys at most half full.
  explicit PointerMap(size_t expected) {
    size_t capacity = 16;
    while (capacity < 2 * expected) capacity *= 2;
    slots_.assign(capacity, {nullptr, Value()});
  }

  // Adds key -> value; false, changing nothing, when key is there already or
  // the map holds `expected` keys.
  bool insert(const void* key, Value value) {
    if (2 * (size_ + 1) > slots_.size()) return false;
    auto& slot = slots_[probe(key)];
    if (slot.first == key) return false;
    slot = {key, std::move(value)};
    ++size_;
    return true;
  }

  const Value* find(const void* key) const {
    const auto& slot = slots_[probe(key)];
    return slot.first == key ? &slot.second : nullptr;
  }

 private:
  // The slot holding key, or the empty one where it would go. Fibonacci hashing:
  // allocations are aligned, the low bits of an address say little.
  size_t probe(const void* key) const {
    size_t slot = static_cast<size_t>((reinterpret_cast<uintptr_t>(key) * 0x9E3779B97F4A7C15ull) >> 32);
    for (;; ++slot) {
      slot &= slots_.size() - 1;
      if (slots_[slot].first == nullptr || slots_[slot].first == key) return slot;
    }
  }

  std::vector<std::pair<const void*, Value>> slots_;
  size_t size_ = 0;
};

}  // namespace fused_linreg
