// The in-place ops (sgd_, linreg_step_, linreg_epoch_) write through raw
// pointers, which autograd cannot see. Their Autograd kernel refuses, as native
// in-place ops do, to write into a leaf that requires grad while autograd
// records (its gradient would be meaningless); their ADInplaceOrView kernel
// bumps the version counter of every tensor the schema marks as written
// (Tensor(a!), Tensor(a!)[], Tensor(a!)?), so that a backward through a graph
// that saved one of them raises instead of silently using the updated values.
// Both are unboxed: an optimizer step passes lists of hundreds of tensors.
// They have no tangent formula: a tangent or a torch.func wrapper raises.
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/GradMode.h>
#include <torch/library.h>

#include <string>
#include <type_traits>
#include <vector>

#include "op_handles.h"
#include "transforms.h"

namespace fused_linreg {
namespace {

constexpr const char* kNotDifferentiable =
    "an in-place update is not a differentiable function; call it outside forward-mode AD and torch.func "
    "transforms, on plain tensors";

template <typename F>
void for_each_tensor(const at::Tensor& t, F&& f) {
  if (t.defined()) f(t);
}
template <typename F>
void for_each_tensor(const std::optional<at::Tensor>& t, F&& f) {
  if (t.has_value()) for_each_tensor(*t, f);
}
template <typename F>
void for_each_tensor(at::TensorList tensors, F&& f) {
  for (const at::Tensor& t : tensors) for_each_tensor(t, f);
}
template <typename NotATensor, typename F>
void for_each_tensor(const NotATensor& /*value*/, F&& /*f*/) {}

std::vector<bool> written_arguments(const c10::FunctionSchema& schema) {
  std::vector<bool> written;
  for (const c10::Argument& arg : schema.arguments()) {
    written.push_back(arg.alias_info() != nullptr && arg.alias_info()->isWrite());
  }
  return written;
}

template <const char* const* Name, const char* const* Overload, typename Signature>
struct InPlaceOp;

template <const char* const* Name, const char* const* Overload, typename Ret, typename... Args>
struct InPlaceOp<Name, Overload, Ret(Args...)> {
  static_assert(sizeof...(Args) > 0);

  static const c10::TypedOperatorHandle<Ret(Args...)>& op() {
    static const auto handle = find_op<Ret(Args...)>(*Name, *Overload);
    return handle;
  }

  static const std::vector<bool>& written() {
    static const std::vector<bool> flags = written_arguments(op().schema());
    return flags;
  }

  static Ret autograd(c10::DispatchKeySet keys, Args... args) {
    check_not_transformed(op_name().c_str(), kNotDifferentiable, args...);
    if (at::GradMode::is_enabled()) {
      size_t index = 0;
      (check_not_grad_leaf(index++, args), ...);
    }
    at::AutoDispatchBelowAutograd below_autograd;
    return op().redispatch(keys & c10::after_autograd_keyset, args...);
  }

  static Ret bump_versions(c10::DispatchKeySet keys, Args... args) {
    auto bump_written = [&] {
      size_t index = 0;
      (bump_if_written(index++, args), ...);
    };
    if constexpr (std::is_void_v<Ret>) {
      redispatch_below(keys, args...);
      bump_written();
    } else {
      Ret result = redispatch_below(keys, args...);
      bump_written();
      return result;
    }
  }

 private:
  static Ret redispatch_below(c10::DispatchKeySet keys, Args... args) {
    at::AutoDispatchBelowADInplaceOrView below;
    return op().redispatch(keys & c10::after_ADInplaceOrView_keyset, args...);
  }

  template <typename T>
  static void check_not_grad_leaf(size_t index, const T& arg) {
    if (!written()[index]) return;
    for_each_tensor(arg, [&](const at::Tensor& t) {
      TORCH_CHECK(!(t.requires_grad() && t.is_leaf()), "fused_linreg.", op_name(), ": ",
                  op().schema().arguments()[index].name(), " is a leaf tensor that requires grad and is updated in ",
                  "place; call it under torch.no_grad() (as optimizers do)");
    });
  }

  template <typename T>
  static void bump_if_written(size_t index, const T& arg) {
    if (written()[index]) for_each_tensor(arg, [](const at::Tensor& t) { bump_version(t); });
  }

  // "sgd_" of "fused_linreg::sgd_".
  static const std::string& op_name() {
    static const std::string name = [] {
      const std::string& qualified = op().schema().name();
      return qualified.substr(qualified.find("::") + 2);
    }();
    return name;
  }
};

using SgdOp = InPlaceOp<&kSgd, &kDefault, SgdSig<double>>;
using SgdTensorLrOp = InPlaceOp<&kSgd, &kTensorLr, SgdSig<const at::Tensor&>>;
using LinregStepOp = InPlaceOp<&kLinregStep, &kDefault, LinregStepSig>;
using LinregEpochOp = InPlaceOp<&kLinregEpoch, &kDefault, LinregEpochSig>;

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, Autograd, m) {
  m.impl("sgd_", TORCH_FN(SgdOp::autograd));
  m.impl("sgd_.tensor_lr", TORCH_FN(SgdTensorLrOp::autograd));
  m.impl("linreg_step_", TORCH_FN(LinregStepOp::autograd));
  m.impl("linreg_epoch_", TORCH_FN(LinregEpochOp::autograd));
}

TORCH_LIBRARY_IMPL(fused_linreg, ADInplaceOrView, m) {
  m.impl("sgd_", TORCH_FN(SgdOp::bump_versions));
  m.impl("sgd_.tensor_lr", TORCH_FN(SgdTensorLrOp::bump_versions));
  m.impl("linreg_step_", TORCH_FN(LinregStepOp::bump_versions));
  m.impl("linreg_epoch_", TORCH_FN(LinregEpochOp::bump_versions));
}

}  // namespace fused_linreg
