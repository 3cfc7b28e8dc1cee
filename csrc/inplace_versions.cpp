// The in-place ops write through raw pointers, which autograd cannot see. As
// native in-place ops do, bump the version counter of every tensor the schema
// marks as written (Tensor(a!), Tensor(a!)[], Tensor(a!)?), so that a backward
// through a graph that saved one of them raises instead of silently using the
// updated values. One boxed kernel serves every mutating op; it also refuses
// to write into a leaf that requires grad while autograd is recording.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <vector>

namespace fused_linreg {
namespace {

// As for native in-place ops: writing into a leaf that requires grad while
// autograd records would make its gradient meaningless.
void check_not_grad_leaf(const at::Tensor& t, const c10::FunctionSchema& schema, const c10::Argument& arg) {
  TORCH_CHECK(!(t.defined() && t.requires_grad() && t.is_leaf()), "fused_linreg.", schema.name().substr(14),
              ": ", arg.name(), " is a leaf tensor that requires grad and is updated in place; ",
              "call it under torch.no_grad() (as optimizers do)");
}

std::vector<at::Tensor> written_tensors(const c10::FunctionSchema& schema, const torch::jit::Stack& stack) {
  const auto& args = schema.arguments();
  const size_t first = stack.size() - args.size();
  const bool recording = at::GradMode::is_enabled();
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < args.size(); ++i) {
    const c10::AliasInfo* alias = args[i].alias_info();
    if (alias == nullptr || !alias->isWrite()) continue;
    const c10::IValue& value = stack[first + i];
    if (value.isTensor()) {
      written.push_back(value.toTensor());
      if (recording) check_not_grad_leaf(written.back(), schema, args[i]);
    } else if (value.isTensorList()) {
      for (const at::Tensor& t : value.toTensorList()) {
        written.push_back(t);
        if (recording) check_not_grad_leaf(t, schema, args[i]);
      }
    }
  }
  return written;
}

void run_then_bump_versions(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  const std::vector<at::Tensor> written = written_tensors(op.schema(), *stack);
  {
    at::AutoDispatchBelowADInplaceOrView below;
    op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
  }
  for (const at::Tensor& t : written) {
    if (t.defined()) torch::autograd::impl::bump_version(t);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, ADInplaceOrView, m) {
  for (const char* name : {"sgd_", "sgd_.tensor_lr", "linreg_step_", "linreg_epoch_"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&run_then_bump_versions>());
  }
}

}  // namespace fused_linreg
