"""Time groklab's vectorised Fisher diagonal against the per-sample autograd loop.

Run: python benchmarks/fisher.py [--repeats 3] [--threads N] [--inputs 512] [--mlp-inputs 64]

``fisher_diagonal`` (JACOBIAN method for IsingCNN, CLOSED_FORM for ModAddMLP)
and ``fisher_diagonal_reference`` (one autograd call per input and output)
compute the classification-form diagonal of freshly initialised models on
the same inputs: random 16 x 16 lattices of +-1 spins for IsingCNN, random
pairs for ModAddMLP (P = 113, hidden 512). Both are timed in
float32. They must agree within 1e-5 relative on float64 copies of the
model and inputs before the medians and ratios are printed and written to
JSON.
The reference side is timed without a warm-up run because it is slow
(P autograd calls per ModAddMLP input).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import torch
from torch import Tensor, nn

from common import summary, time_call, write_json
from groklab.analysis.fisher import fisher_diagonal, fisher_diagonal_reference
from groklab.models import IsingCNN, ModAddMLP

FORM = "classification"


def ising_case(n_inputs: int) -> tuple[nn.Module, Tensor]:
    """Return an IsingCNN and ``n_inputs`` random 16 x 16 lattices."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    spins = torch.randint(0, 2, (n_inputs, 1, 16, 16), generator=generator)
    return IsingCNN(16, 100), spins.float() * 2 - 1


def modadd_case(n_inputs: int) -> tuple[nn.Module, Tensor]:
    """Return a ModAddMLP (P = 113, hidden 512) and ``n_inputs`` random pairs."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    pairs = torch.randint(0, 113, (n_inputs, 2), generator=generator)
    return ModAddMLP(113, 512), pairs


def compare(model: nn.Module, inputs: Tensor, repeats: int) -> dict:
    """Time both Fisher functions on the same inputs and check they agree."""
    # Agreement is checked on a float64 copy, because float32 sums in another
    # order differed by up to 1.3e-5 relative on small ModAddMLP entries.
    double = copy.deepcopy(model).double()
    checked = inputs.double() if inputs.is_floating_point() else inputs
    fast = fisher_diagonal(double, checked, FORM)
    reference = fisher_diagonal_reference(double, checked, FORM)
    for name, value in fast.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-12)
    fast_s = time_call(lambda: fisher_diagonal(model, inputs, FORM), repeats)
    reference_s = time_call(
        lambda: fisher_diagonal_reference(model, inputs, FORM), repeats, warmup=0
    )
    return {
        "fast": summary(fast_s),
        "reference": summary(reference_s),
        "speedup": statistics.median(reference_s) / statistics.median(fast_s),
        "form": FORM,
        "n_inputs": len(inputs),
        "n_params": sum(value.numel() for value in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per side (3)"
    )
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (1, as groklab analyses)")
    parser.add_argument("--inputs", type=int, default=512,
                        help="IsingCNN inputs the diagonal averages over (512)")
    parser.add_argument("--mlp-inputs", type=int, default=64,
                        help="ModAddMLP inputs (64); the reference takes P autograd "
                        "calls per input, about 45 ms on one core")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"),
                        help="JSON output (benchmarks/fisher.json)")
    args = parser.parse_args()
    for option in ("repeats", "threads", "inputs", "mlp_inputs"):
        value = getattr(args, option)
        if value < 1:
            flag = option.replace("_", "-")
            parser.error(f"--{flag} {value} is invalid: use an integer >= 1")

    torch.set_num_threads(args.threads)
    result = {}
    cases = (("ising_cnn", ising_case, args.inputs),
             ("modadd_mlp", modadd_case, args.mlp_inputs))
    for name, case, n_inputs in cases:
        entry = compare(*case(n_inputs), args.repeats)
        entry.update(threads=args.threads, repeats=args.repeats)
        result[name] = entry
        print(
            f"{name:11s} fast {entry['fast']['median_s']:.3f} s"
            f"  reference {entry['reference']['median_s']:.3f} s"
            f"  speedup {entry['speedup']:.1f}x"
        )

    result["speedup"] = result["ising_cnn"]["speedup"]
    result["speedups"] = {
        name: result[name]["speedup"] for name in ("ising_cnn", "modadd_mlp")
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
