// Which compiled CPU kernels run: the best CPU capability both built
// (setup.py: DEFAULT always, AVX2 and AVX512 on x86-64) and supported by the
// running CPU, chosen once at load. FUSED_LINREG_CPU_CAPABILITY=default|avx2
// forces a lower one, as ATEN_CPU_CAPABILITY does for ATen's kernels, so that
// each can be tested on one machine.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

#include "cpu_capability.h"
#include "kernels.h"

namespace fused_linreg {
namespace {

CpuCapability best_supported() {
#if defined(FUSED_LINREG_CPU_VARIANTS)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return CpuCapability::kAvx512;
  }
  if (avx2) return CpuCapability::kAvx2;
#endif
  return CpuCapability::kDefault;
}

CpuCapability requested(CpuCapability best) {
  const char* value = std::getenv("FUSED_LINREG_CPU_CAPABILITY");
  if (value == nullptr || *value == '\0') return best;
  std::string name(value);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  CpuCapability wanted = CpuCapability::kDefault;
  if (name == "avx512") {
    wanted = CpuCapability::kAvx512;
  } else if (name == "avx2") {
    wanted = CpuCapability::kAvx2;
  } else {
    TORCH_CHECK(name == "default", "fused_linreg: FUSED_LINREG_CPU_CAPABILITY must be default, avx2 or avx512, got '",
                value, "'");
  }
  // Lowering only: a capability the CPU lacks would die on its first instruction.
  return std::min(wanted, best);
}

// The kernels of one capability, as pointers.
struct CpuKernelTable {
  decltype(&DEFAULT::CpuKernels::linear_forward) linear_forward;
  decltype(&DEFAULT::CpuKernels::linear_backward_input) linear_backward_input;
  decltype(&DEFAULT::CpuKernels::linear_backward_params) linear_backward_params;
  decltype(&DEFAULT::CpuKernels::squared_difference) squared_difference;
  decltype(&DEFAULT::CpuKernels::squared_difference_backward) squared_difference_backward;
  decltype(&DEFAULT::CpuKernels::sgd) sgd;
  decltype(&DEFAULT::CpuKernels::linreg_grad) linreg_grad;
  decltype(&DEFAULT::CpuKernels::linreg_steps) linreg_steps;
  decltype(&DEFAULT::CpuKernels::gram_rows) gram_rows;
};

template <typename Kernels>
CpuKernelTable table_of() {
  return {&Kernels::linear_forward, &Kernels::linear_backward_input, &Kernels::linear_backward_params,
          &Kernels::squared_difference, &Kernels::squared_difference_backward, &Kernels::sgd,
          &Kernels::linreg_grad, &Kernels::linreg_steps, &Kernels::gram_rows};
}

const CpuKernelTable& kernels() {
  static const CpuKernelTable table = [] {
    switch (cpu_capability()) {
#if defined(FUSED_LINREG_CPU_VARIANTS)
      case CpuCapability::kAvx512:
        return table_of<AVX512::CpuKernels>();
      case CpuCapability::kAvx2:
        return table_of<AVX2::CpuKernels>();
#endif
      default:
        return table_of<DEFAULT::CpuKernels>();
    }
  }();
  return table;
}

}  // namespace

CpuCapability cpu_capability() {
  static const CpuCapability capability = requested(best_supported());
  return capability;
}

const char* cpu_capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::kAvx512:
      return "avx512";
    case CpuCapability::kAvx2:
      return "avx2";
    default:
      return "default";
  }
}

void DeviceKernels<c10::kCPU>::linear_forward(const at::Tensor& x2d, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias, const at::Tensor& y2d) {
  kernels().linear_forward(x2d, weight, bias, y2d);
}

void DeviceKernels<c10::kCPU>::linear_backward_input(const at::Tensor& grad2d, const at::Tensor& weight,
                                                     const at::Tensor& grad_x2d) {
  kernels().linear_backward_input(grad2d, weight, grad_x2d);
}

void DeviceKernels<c10::kCPU>::linear_backward_params(const at::Tensor& grad2d, const at::Tensor& x2d,
                                                      const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  kernels().linear_backward_params(grad2d, x2d, grad_weight, grad_bias);
}

void DeviceKernels<c10::kCPU>::squared_difference(const at::Tensor& x, const at::Tensor& t, Reduction reduction,
                                                  double coefficient, const at::Tensor& out) {
  kernels().squared_difference(x, t, reduction, coefficient, out);
}

void DeviceKernels<c10::kCPU>::squared_difference_backward(const at::Tensor& grad_output, const at::Tensor& x,
                                                           const at::Tensor& t, Reduction reduction,
                                                           double coefficient, const at::Tensor& grad_input) {
  kernels().squared_difference_backward(grad_output, x, t, reduction, coefficient, grad_input);
}

void DeviceKernels<c10::kCPU>::sgd(const SgdLists& lists, double lr, const std::optional<at::Tensor>& lr_tensor,
                                   const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,
                                   const std::optional<at::Tensor>& found_inf) {
  kernels().sgd(lists, lr, lr_tensor, opt, grad_scale, found_inf);
}

void DeviceKernels<c10::kCPU>::linreg_grad(const LinregTensors& t, const at::Tensor& loss,
                                           const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  kernels().linreg_grad(t, loss, grad_weight, grad_bias);
}

void DeviceKernels<c10::kCPU>::linreg_steps(const LinregTensors& t, const at::Tensor& rows, int64_t batch_size,
                                            const StepArgs& args, const at::Tensor& losses) {
  kernels().linreg_steps(t, rows, batch_size, args, losses);
}

void DeviceKernels<c10::kCPU>::gram_rows(const at::Tensor& X, const at::Tensor& y2d,
                                              const std::optional<at::Tensor>& sample_weight,
                                              const at::Tensor& x_shift, const at::Tensor& y_shift,
                                              const at::Tensor& gram) {
  kernels().gram_rows(X, y2d, sample_weight, x_shift, y_shift, gram);
}

}  // namespace fused_linreg
