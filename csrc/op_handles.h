// Typed handles of the fused_linreg ops, for C++ that calls them through the
// dispatcher (autograd, autocast, the fast Python entries).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace fused_linreg {

// Qualified names, as template arguments (pointers to these) and for lookups.
inline constexpr const char* kLinear = "fused_linreg::linear";
inline constexpr const char* kLinearBackwardInput = "fused_linreg::linear_backward_input";
inline constexpr const char* kLinearBackwardParams = "fused_linreg::linear_backward_params";
inline constexpr const char* kSquaredLoss = "fused_linreg::squared_loss";
inline constexpr const char* kSquaredLossBackward = "fused_linreg::squared_loss_backward";
inline constexpr const char* kMseLoss = "fused_linreg::mse_loss";
inline constexpr const char* kMseLossBackward = "fused_linreg::mse_loss_backward";
inline constexpr const char* kSgd = "fused_linreg::sgd_";
inline constexpr const char* kLinregGrad = "fused_linreg::linreg_grad";
inline constexpr const char* kLinregStep = "fused_linreg::linreg_step_";
inline constexpr const char* kLinregEpoch = "fused_linreg::linreg_epoch_";
inline constexpr const char* kLinregGram = "fused_linreg::linreg_gram";
// Overload names.
inline constexpr const char* kDefault = "";
inline constexpr const char* kTensorLr = "tensor_lr";

using LinearSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&);
using LinearBackwardInputSig = at::Tensor(const at::Tensor&, const at::Tensor&);
using LinearBackwardParamsSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&);
using LossSig = at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view);
using LossBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::string_view);
using LinregGradSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                      const at::Tensor&,
                                                                      const std::optional<at::Tensor>&);
using LinregGramSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                const at::Tensor&, const at::Tensor&);
// sgd_ and sgd_.tensor_lr: lr is a double or a Tensor.
template <typename Lr>
using SgdSig = void(at::TensorList, at::TensorList, at::TensorList, const c10::List<bool>&, Lr, double, double, double,
                    bool, bool, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&);
using LinregStepSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                const std::optional<at::Tensor>&, bool, double, double, double, double, bool, bool);
using LinregEpochSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&,
                                 const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                 const std::optional<at::Tensor>&, bool, double, double, double, double, bool, bool);

// Looked up once per call site (a static): the lookup takes a lock and a hash.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name, const char* overload = "") {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload).typed<Signature>();
}

}  // namespace fused_linreg
