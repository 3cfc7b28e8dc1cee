"""One fused step on a large X and one book-scale epoch, for a profiler:

    ncu --clock-control none --kernel-name regex:linreg_ python benchmarks/profile_step.py

Each op runs twice (the first call warms up); gpu_check.sh profiles the second."""

import torch

import fused_linreg


def main() -> None:
    torch.manual_seed(0)
    X = torch.randn(1 << 22, 64, device="cuda")
    y = torch.randn(1 << 22, device="cuda")
    weight, bias = torch.zeros(1, 64, device="cuda"), torch.zeros(1, device="cuda")
    book_X, book_y = torch.randn(1000, 2, device="cuda"), torch.randn(1000, device="cuda")
    book_weight, book_bias = torch.zeros(1, 2, device="cuda"), torch.zeros(1, device="cuda")
    for _ in range(2):
        fused_linreg.linreg_step_(X, y, weight, bias, lr=0.01)
        fused_linreg.linreg_epoch_(book_X, book_y, book_weight, book_bias, lr=0.03, batch_size=10)
    torch.cuda.synchronize()
    print("ran linreg_step_ on 4194304x64 and linreg_epoch_ on 1000x2 (batch 10), twice each")


if __name__ == "__main__":
    main()
