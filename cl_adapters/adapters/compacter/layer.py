"""The PHM layer (parameterized hypercomplex multiplication, Zhang et al. 2021), as Compacter uses it:

    W = sum_i  A_i (x) B_i,      A_i: n x n (the rule, shared by every layer),
                                 B_i = left_i @ right_i: (in/n x rank) @ (rank x out/n)

so a d -> r projection has n (d/n + r/n) rank + r parameters instead of d r + r.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PHMLinear(nn.Module):
    """A Linear-like layer (``weight``, ``bias``, ``in_features``) whose weight is a PHM product.

    The rule ``A`` is shared: it is passed in and held outside the module tree (registered once by the
    caller), so it is one parameter however many layers use it. ``zero=True`` starts the weight at 0
    (B's right factor zero, as LoRA's B): an up-projection that makes the adapter the identity at init.
    """

    def __init__(self, in_features: int, out_features: int, rule: nn.Parameter, rank: int, zero: bool = False):
        super().__init__()
        n = rule.shape[0]
        self.in_features, self.out_features = in_features, out_features
        self._rule = (rule,)  # a tuple: not registered here (see the class docstring)
        self.left = nn.Parameter(torch.empty(n, in_features // n, rank, device=rule.device))
        self.right = nn.Parameter(torch.empty(n, rank, out_features // n, device=rule.device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=rule.device))
        for i in range(n):  # AdapterHub's init: Xavier per slice
            nn.init.xavier_normal_(self.left.data[i])
            nn.init.xavier_normal_(self.right.data[i])
        if zero:
            nn.init.zeros_(self.right)

    @property
    def rule(self) -> nn.Parameter:
        return self._rule[0]

    @property
    def weight(self) -> torch.Tensor:
        """The (out, in) weight, as ``nn.Linear`` has it: W^T = sum_i A_i^T (x) B_i^T."""
        b = torch.bmm(self.left, self.right)  # (n, in/n, out/n)
        return torch.einsum("iab,icd->bdac", self.rule, b).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, phm_dim={self.rule.shape[0]}, rank={self.left.shape[-1]}"
