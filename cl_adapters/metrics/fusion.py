"""The Avalanche plugin that records which adapters each task's fusion attends to."""

from __future__ import annotations

from avalanche.core import SupervisedPlugin

from cl_adapters.adapters import Fusion


class FusionAttention(SupervisedPlugin):
    """After each eval experience of a fused task, ``attention[task]`` = its fusion's mean attention
    per layer and adapter over that experience's tokens (padding tokens included). A task's fusion is
    frozen once trained, so the last eval's record is the record."""

    def __init__(self):
        super().__init__()
        self.attention: dict[int, dict] = {}

    def restore(self, measured: dict) -> None:
        """Resume: the attention a checkpoint's results recorded (its ``fusion_attention``)."""
        self.attention = {int(t): a for t, a in measured.get("fusion_attention", {}).items()}

    def before_eval_exp(self, strategy, **kwargs):
        for module in strategy.model.modules():
            if isinstance(module, Fusion):
                module.reset_attention()

    def after_eval_exp(self, strategy, **kwargs):
        for task in strategy.experience.task_labels:
            found = strategy.model.fusion_attention(int(task))
            if found is not None:
                self.attention[int(task)] = found
