// torch.func.vmap: the batching rules of the ops (FuncTorchBatched key). The
// differentiable ops and their backward ops are decomposed into PyTorch's
// operators, whose batching rules functorch has (as functorch's own
// decompositions do); the others raise, where functorch's fallback would run
// them once per batch entry or fail on their in-place lists.
#include <torch/library.h>

#include <string>

#include "aten_reference.h"
#include "op_handles.h"

namespace fused_linreg {
namespace {

template <const char* const* Name, typename Signature>
struct RefuseVmap;

template <const char* const* Name, typename Ret, typename... Args>
struct RefuseVmap<Name, Ret(Args...)> {
  static Ret call(Args... /*args*/) {
    const std::string name(*Name);
    TORCH_CHECK(false, "fused_linreg.", name.substr(name.find("::") + 2),
                " does not support torch.func.vmap: it updates tensors in place or returns values that are not "
                "differentiable; map it with a Python loop instead");
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, FuncTorchBatched, m) {
  m.impl("linear", &aten_reference::linear);
  m.impl("linear_backward_input", &aten_reference::linear_backward_input);
  m.impl("linear_backward_params", &aten_reference::linear_backward_params);
  m.impl("squared_loss", &aten_reference::squared_loss);
  m.impl("squared_loss_backward", &aten_reference::squared_loss_backward);
  m.impl("mse_loss", &aten_reference::mse_loss);
  m.impl("mse_loss_backward", &aten_reference::mse_loss_backward);
  m.impl("sgd_", &RefuseVmap<&kSgd, SgdSig<double>>::call);
  m.impl("sgd_.tensor_lr", &RefuseVmap<&kSgd, SgdSig<const at::Tensor&>>::call);
  m.impl("linreg_grad", &RefuseVmap<&kLinregGrad, LinregGradSig>::call);
  m.impl("linreg_step_", &RefuseVmap<&kLinregStep, LinregStepSig>::call);
  m.impl("linreg_epoch_", &RefuseVmap<&kLinregEpoch, LinregEpochSig>::call);
  m.impl("linreg_gram", &RefuseVmap<&kLinregGram, LinregGramSig>::call);
}

}  // namespace fused_linreg
