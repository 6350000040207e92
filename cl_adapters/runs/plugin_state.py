"""The CL plugins the platform supports (Avalanche's EWC and online EWC, SI, LwF, Replay): their settings
checked before training, and their state as tensors and JSON, so a checkpointed run resumes exactly:
EWC's saved parameters and importances, SI's anchor weights, importances and accumulated path integral,
LwF's classes per task (its previous model is the restored model itself), the replay buffer's samples
and reservoir weights, group by group.
"""

from __future__ import annotations

import copy

import torch
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin, SynapticIntelligencePlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer, ReservoirSamplingBuffer
from avalanche.training.utils import ParamData

from cl_adapters import avalanche_compat as compat
from cl_adapters.errors import UserError
from cl_adapters.streams.base import task_dataset

SUPPORTED = (EWCPlugin, LwFPlugin, ReplayPlugin, SynapticIntelligencePlugin)
SI_STATE = {"anchor": lambda p: p.ewc_data[0], "importance": lambda p: p.ewc_data[1],
            "cum_trajectory": lambda p: p.syn_data["cum_trajectory"]}  # the rest is rebuilt every step or task


def check_settings(name: str, plugin) -> None:
    """Values Avalanche accepts silently (a negative penalty) or fails on mid-training (a negative buffer)."""
    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    rules = []
    if isinstance(plugin, EWCPlugin):
        rules = [("ewc_lambda", plugin.ewc_lambda, number(plugin.ewc_lambda) and plugin.ewc_lambda >= 0, "a number >= 0")]
        if plugin.mode == "online":
            decay = plugin.decay_factor
            rules.append(("decay_factor", decay, number(decay) and 0 <= decay <= 1, "a number in [0, 1]"))
    elif isinstance(plugin, SynapticIntelligencePlugin):
        lambdas = plugin.si_lambda
        rules = [("si_lambda", lambdas if len(lambdas) > 1 else lambdas[0], all(number(x) and x >= 0 for x in lambdas),
                  "a number >= 0 (or one per task)")]
    elif isinstance(plugin, LwFPlugin):
        alpha, temperature = plugin.lwf.alpha, plugin.lwf.temperature
        alphas = alpha if isinstance(alpha, (list, tuple)) else [alpha]
        rules = [("alpha", alpha, all(number(a) and a >= 0 for a in alphas), "a number >= 0 (or one per task)"),
                 ("temperature", temperature, number(temperature) and temperature > 0, "a positive number")]
    elif isinstance(plugin, ReplayPlugin):
        size = plugin.mem_size
        rules = [("mem_size", size, isinstance(size, int) and not isinstance(size, bool) and size > 0, "a positive integer")]
    for key, value, ok, what in rules:
        if not ok:
            raise UserError(f"plugins.{name}.{key} must be {what}, got {value!r}")


def check(plugins: list) -> None:
    """Refuse, before training, plugins whose state a checkpoint cannot hold."""
    for plugin in plugins:
        if not isinstance(plugin, SUPPORTED):
            raise UserError(f"{type(plugin).__name__}: its state is not checkpointed, so this run cannot resume; "
                            "start over with resume=false (or checkpoint=false)")
        if isinstance(plugin, ReplayPlugin) and type(plugin.storage_policy) is not ExperienceBalancedBuffer:
            raise UserError(f"ReplayPlugin with {type(plugin.storage_policy).__name__}: only the default "
                            "ExperienceBalancedBuffer is checkpointed; start over with resume=false")


def state(plugins: list) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(tensors named ``plugin.<i>.*``, one JSON-able dict per plugin)."""
    tensors, info = {}, []
    for i, plugin in enumerate(plugins):
        prefix = f"plugin.{i}"
        if isinstance(plugin, EWCPlugin):
            for kind in ("saved_params", "importances"):
                for exp, params in getattr(plugin, kind).items():
                    tensors |= {f"{prefix}.{kind}.{exp}.{name}": p.data.detach().cpu() for name, p in params.items()}
            info.append({"experiences": {kind: list(getattr(plugin, kind)) for kind in ("saved_params", "importances")}})
        elif isinstance(plugin, SynapticIntelligencePlugin):
            for kind, part in SI_STATE.items():
                tensors |= {f"{prefix}.{kind}.{name}": p.data.detach().cpu() for name, p in part(plugin).items()}
            info.append({"parameters": list(plugin.ewc_data[0])})
        elif isinstance(plugin, LwFPlugin):
            classes = {str(t): sorted(int(c) for c in cs) for t, cs in plugin.lwf.prev_classes_by_task.items()}
            info.append({"expcount": plugin.lwf.expcount, "prev_classes_by_task": classes})
        elif isinstance(plugin, ReplayPlugin):
            policy, groups = plugin.storage_policy, {}
            for g, group in policy.buffer_groups.items():
                samples = [group.buffer[j] for j in range(len(group.buffer))]
                tensors[f"{prefix}.{g}.weights"] = compat.buffer_weights(group).detach().cpu()
                if samples:
                    tensors[f"{prefix}.{g}.x"] = torch.stack([s[0] for s in samples])
                    tensors[f"{prefix}.{g}.y"] = torch.tensor([int(s[1]) for s in samples])
                groups[str(g)] = {"max_size": group.max_size, "task": int(samples[0][-1]) if samples else 0}
            info.append({"num_exps": compat.experiences_seen(policy), "groups": groups})
        else:
            info.append({})  # not checkpointed: a resume is refused by ``check``
    return tensors, info


def restore(plugins: list, model, tensors: dict[str, torch.Tensor], info: list[dict]) -> None:
    """Put ``state``'s output back into freshly built plugins of the same config."""
    for i, (plugin, data) in enumerate(zip(plugins, info)):
        prefix = f"plugin.{i}"
        if isinstance(plugin, EWCPlugin):
            order = [name for name, _ in model.named_parameters()]  # online EWC pairs importances by position
            for kind, experiences in data["experiences"].items():
                target = getattr(plugin, kind)
                for exp in experiences:
                    start = f"{prefix}.{kind}.{exp}."
                    target[int(exp)] = {name: ParamData(name, init_tensor=tensors[start + name].clone())
                                        for name in order if start + name in tensors}
        elif isinstance(plugin, SynapticIntelligencePlugin):
            for name in data["parameters"]:
                for kind, part in SI_STATE.items():
                    part(plugin)[name] = ParamData(name, init_tensor=tensors[f"{prefix}.{kind}.{name}"].clone())
                shape = plugin.ewc_data[0][name].shape
                for kind in ("old_theta", "new_theta", "grad", "trajectory"):
                    plugin.syn_data[kind][name] = ParamData(name, shape)
        elif isinstance(plugin, LwFPlugin):
            plugin.lwf.expcount = data["expcount"]
            plugin.lwf.prev_model = copy.deepcopy(model)
            plugin.lwf.prev_classes_by_task.update({int(t): set(cs) for t, cs in data["prev_classes_by_task"].items()})
        elif isinstance(plugin, ReplayPlugin):
            policy = plugin.storage_policy
            compat.set_experiences_seen(policy, data["num_exps"])
            for g, group_info in data["groups"].items():
                group = ReservoirSamplingBuffer(group_info["max_size"])
                compat.set_buffer_weights(group, tensors[f"{prefix}.{g}.weights"].clone())
                if f"{prefix}.{g}.x" in tensors:
                    group.buffer = task_dataset(tensors[f"{prefix}.{g}.x"], tensors[f"{prefix}.{g}.y"], group_info["task"])
                policy.buffer_groups[int(g)] = group
