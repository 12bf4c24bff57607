// DeviceArena on a real device: one allocation of the asked size, offset
// views with bounds and alignment errors that name the arena and the bytes,
// reserve() packing and its full-arena error, the high-water mark, and that
// neighbouring sub-buffers really are disjoint device memory. Label gpu;
// skips without a CUDA device.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

// The message of the Error that `f` throws, or "" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class CudaArena : public ::testing::Test {
 protected:
  void SetUp() override {
    TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
    stream_ = std::make_unique<DeviceStream>(0);
  }
  std::unique_ptr<DeviceStream> stream_;
};

TEST_F(CudaArena, SizeBaseAndInBoundsViews) {
  DeviceArena arena(10000, "acts");
  EXPECT_EQ(arena.size(), 10000u);
  EXPECT_EQ(arena.name(), "acts");
  ASSERT_NE(arena.base(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(arena.base()) % 256, 0u);
  EXPECT_EQ(arena.at(0, 10000), arena.base());
  EXPECT_EQ(arena.at(64, 8), static_cast<char*>(arena.base()) + 64);
  EXPECT_EQ(arena.at<float>(128, 10), reinterpret_cast<float*>(static_cast<char*>(arena.base()) + 128));
  EXPECT_NO_THROW(arena.at(9984, 16));  // ends exactly at the arena's end
  EXPECT_NO_THROW(arena.at(9984, 0));
}

TEST_F(CudaArena, OutOfBoundsAndMisalignedViewsThrowNamingTheBytes) {
  DeviceArena arena(4096, "grads");
  std::string e = error_of([&] { arena.at(4032, 128); });
  EXPECT_NE(e.find("grads"), std::string::npos) << e;
  EXPECT_NE(e.find("[4032, 4160)"), std::string::npos) << e;
  EXPECT_NE(e.find("4096 bytes"), std::string::npos) << e;
  e = error_of([&] { arena.at(8192, 0); });
  EXPECT_NE(e.find("outside"), std::string::npos) << e;
  e = error_of([&] { arena.at(64, SIZE_MAX); });  // offset + bytes wraps around
  EXPECT_NE(e.find("outside"), std::string::npos) << e;
  e = error_of([&] { arena.at(32, 16); });
  EXPECT_NE(e.find("offset 32"), std::string::npos) << e;
  EXPECT_NE(e.find("alignment 64"), std::string::npos) << e;
  EXPECT_EQ(arena.high_water(), 0u) << "a refused view must not count";
  e = error_of([] { DeviceArena bad(1024, "odd", 48); });
  EXPECT_NE(e.find("alignment 48"), std::string::npos) << e;
}

TEST_F(CudaArena, ReserveRoundsUpAndRefusesWhenFull) {
  DeviceArena arena(1024, "scratch", 128);
  EXPECT_EQ(arena.reserve(100, "a"), 0u);
  EXPECT_EQ(arena.reserve(1, "b"), 128u);
  EXPECT_EQ(arena.reserve(128, "c"), 256u);
  EXPECT_EQ(arena.reserved(), 384u);
  const std::string e = error_of([&] { arena.reserve(700, "the big one"); });
  EXPECT_NE(e.find("the big one"), std::string::npos) << e;
  EXPECT_NE(e.find("700 bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("384 of 1024"), std::string::npos) << e;
  EXPECT_EQ(arena.reserve(640, "fits exactly"), 384u);
  arena.release_reserved();
  EXPECT_EQ(arena.reserve(8, "again"), 0u);
}

TEST_F(CudaArena, HighWaterIsTheLargestEndHandedOut) {
  DeviceArena arena(1 << 20, "plan");
  EXPECT_EQ(arena.high_water(), 0u);
  arena.at(0, 100);
  EXPECT_EQ(arena.high_water(), 100u);
  arena.at(4096, 64);
  EXPECT_EQ(arena.high_water(), 4160u);
  arena.at(0, 10);
  EXPECT_EQ(arena.high_water(), 4160u);
  arena.reserve(5000, "r");
  EXPECT_EQ(arena.high_water(), 5000u);
  arena.release_reserved();
  EXPECT_EQ(arena.high_water(), 5000u);
}

TEST_F(CudaArena, NeighbouringSubBuffersAreDisjointMemory) {
  DeviceArena arena(3 * 4096, "disjoint");
  void* a = arena.at(arena.reserve(4096, "a"), 4096);
  void* b = arena.at(arena.reserve(4096, "b"), 4096);
  void* c = arena.at(arena.reserve(4096, "c"), 4096);
  std::vector<uint8_t> pa(4096), pb(4096), pc(4096);
  for (size_t i = 0; i < 4096; ++i) pa[i] = uint8_t(i * 7 + 1), pb[i] = uint8_t(i * 13 + 5), pc[i] = uint8_t(i ^ 0x5A);
  testing::upload(a, pa);
  testing::upload(c, pc);
  testing::upload(b, pb);  // written last, between the two others
  EXPECT_EQ(testing::download(a, 4096), pa);
  EXPECT_EQ(testing::download(b, 4096), pb);
  EXPECT_EQ(testing::download(c, 4096), pc);
}

TEST_F(CudaArena, AnImpossibleSizeThrowsNamingCudaMallocAndTheBytes) {
  const size_t huge = size_t{1} << 50;  // 1 PiB
  const std::string e = error_of([&] { DeviceArena arena(huge, "too big"); });
  EXPECT_NE(e.find("cudaMalloc"), std::string::npos) << e;
  EXPECT_NE(e.find(std::to_string(huge) + " bytes"), std::string::npos) << e;
  EXPECT_NE(e.find("cudaErrorMemoryAllocation"), std::string::npos) << e;
  DeviceArena after(4096, "after");  // the failed allocation leaves the device usable
  EXPECT_NO_THROW(testing::upload(after.at(0, 16), std::vector<uint8_t>(16, 1)));
}

}  // namespace
}  // namespace tessera::cuda
