// SPSC ring: functional checks and a two-thread stress test that verifies the
// order and content of every record. Run under ASan/UBSan and TSan.
#include <cstdint>
#include <cstdio>
#include <thread>

#include "check.hpp"
#include "jouletrace/record.hpp"
#include "jouletrace/ring.hpp"

using jouletrace::Record;
using jouletrace::SpscRing;

static void functional() {
  bool threw = false;
  try {
    SpscRing<int> bad(3);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw);

  SpscRing<int> r(4);
  CHECK(r.capacity() == 4);
  CHECK(r.front() == nullptr);
  for (int i = 0; i < 4; ++i) CHECK(r.try_push(i));
  // Full: the new value is refused and nothing unread is overwritten.
  CHECK(!r.try_push(99));
  CHECK(r.try_claim() == nullptr);
  CHECK(r.size_approx() == 4);
  for (int i = 0; i < 4; ++i) {
    const int* v = r.front();
    CHECK(v != nullptr && *v == i);
    r.pop();
  }
  CHECK(r.front() == nullptr);
  // Wrap around the slot array many times.
  for (int i = 0; i < 1000; ++i) {
    CHECK(r.try_push(i));
    CHECK(r.try_push(-i));
    CHECK(*r.front() == i);
    r.pop();
    CHECK(*r.front() == -i);
    r.pop();
  }
  // claim/publish fills in place.
  int* slot = r.try_claim();
  CHECK(slot != nullptr);
  *slot = 7;
  CHECK(r.front() == nullptr);  // not visible before publish
  r.publish();
  CHECK(r.front() != nullptr && *r.front() == 7);
  r.pop();
}

static void stress(std::uint64_t n, std::size_t capacity) {
  SpscRing<Record> ring(capacity);
  std::uint64_t refused = 0;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      Record* slot;
      while ((slot = ring.try_claim()) == nullptr) ++refused;
      slot->seq = i;
      slot->t_before_ns = static_cast<std::int64_t>(i * 3);
      slot->t_after_ns = static_cast<std::int64_t>(i * 3 + 1);
      slot->status = static_cast<std::int32_t>(i & 3);
      for (std::size_t c = 0; c < 4; ++c) slot->values[c] = static_cast<double>(i) + static_cast<double>(c) * 0.25;
      ring.publish();
    }
  });
  std::uint64_t expect = 0;
  while (expect < n) {
    const Record* r = ring.front();
    if (r == nullptr) continue;
    CHECK(r->seq == expect);
    CHECK(r->t_before_ns == static_cast<std::int64_t>(expect * 3));
    CHECK(r->t_after_ns == static_cast<std::int64_t>(expect * 3 + 1));
    CHECK(r->status == static_cast<std::int32_t>(expect & 3));
    for (std::size_t c = 0; c < 4; ++c) CHECK(r->values[c] == static_cast<double>(expect) + static_cast<double>(c) * 0.25);
    ring.pop();
    ++expect;
  }
  producer.join();
  CHECK(ring.front() == nullptr);
  std::printf("stress: %llu records through a ring of %zu, producer found it full %llu times\n",
              static_cast<unsigned long long>(n), capacity, static_cast<unsigned long long>(refused));
}

int main(int argc, char** argv) {
  // Sanitised builds run slower: the script passes a smaller count there.
  const std::uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 5'000'000ULL;
  functional();
  stress(n, 1024);
  stress(n / 4, 4);  // tiny ring: constant full/empty transitions
  std::printf("test_ring: ok\n");
  return 0;
}
