// The CPU capability whose kernels run (cpu_capability.cpp), ordered from
// the least to the most demanding.
#pragma once

namespace fused_linreg {

enum class CpuCapability { kDefault, kAvx2, kAvx512 };

CpuCapability cpu_capability();
const char* cpu_capability_name(CpuCapability capability);

}  // namespace fused_linreg
