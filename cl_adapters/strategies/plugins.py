"""Avalanche's CL plugins where they need a fix."""

from __future__ import annotations

import torch
from avalanche.models import MultiTaskModule
from avalanche.training.plugins import EWCPlugin, SynapticIntelligencePlugin
from avalanche.training.utils import zerolike_params_dict
from torch.nn import functional as F
from torch.utils.data import DataLoader

from cl_adapters.errors import UserError

FISHERS = ("minibatch", "per_sample")


class EWC(EWCPlugin):
    """Avalanche's EWC with a choice of importance (``fisher``):

    - ``minibatch`` (Avalanche's): the squared gradient of each minibatch's mean loss on the true labels,
      averaged over the task's minibatches. Near convergence the true-label gradients are tiny, so this is
      orders of magnitude below a Fisher, by a factor that depends on where training stopped
      (``benchmarks/results/ewc_scale.md``: 2e2 to 5e5 on split MNIST).
    - ``per_sample``: the Fisher of the EWC paper, as van de Ven's code computes it (``fisher_labels='all'``):
      per sample, sum over the output classes c of p(c|x) (d log p(c|x) / d theta)^2, averaged over
      ``fisher_samples`` training samples of the task (None: all). Their lambda is twice ours (their
      penalty has a 1/2, Avalanche's none).

    These are "EXACT" (or "EXACT (n)") and "BATCHED" in van de Ven 2025, "On the computation of the Fisher
    Information in continual learning" (ICLR Blogposts, arXiv:2502.11756), which compares them.
    """

    def __init__(self, ewc_lambda, mode="separate", decay_factor=None, keep_importance_data=False,
                 fisher: str = "minibatch", fisher_samples: int | None = None, chunk: int = 64):
        if fisher not in FISHERS:
            raise UserError(f"plugins: fisher must be one of {FISHERS}, got {fisher!r}")
        super().__init__(ewc_lambda, mode=mode, decay_factor=decay_factor, keep_importance_data=keep_importance_data)
        self.fisher, self.fisher_samples, self.chunk = fisher, fisher_samples, chunk

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        if self.fisher == "minibatch":
            return super().compute_importances(model, criterion, optimizer, dataset, device, batch_size, num_workers)
        model.eval()
        importances = zerolike_params_dict(model)
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        generator = torch.Generator().manual_seed(len(dataset))  # the same subsample on resume
        order = torch.randperm(len(dataset), generator=generator)[:self.fisher_samples].tolist()
        seen = 0
        for batch in DataLoader(torch.utils.data.Subset(dataset, order), batch_size=self.chunk,
                                collate_fn=getattr(dataset, "collate_fn", None)):
            x = batch[0].to(device)
            task = (int(batch[-1][0]),) if isinstance(model, MultiTaskModule) else ()  # one task per experience

            def log_probs(p, xi, c):
                return F.log_softmax(torch.func.functional_call(model, p, (xi[None], *task)), -1)[0, c]

            with torch.no_grad():
                probs = torch.softmax(model(x, *task), -1)
            for c in range(probs.shape[1]):
                grads = torch.func.vmap(torch.func.grad(log_probs), in_dims=(None, 0, None))(params, x, c)
                for name, g in grads.items():
                    importances[name].data += torch.einsum("n,n...->...", probs[:, c], g ** 2)
            seen += len(x)
        for imp in importances.values():
            imp.data /= seen
        model.train()
        return importances


class SynapticIntelligence(SynapticIntelligencePlugin):
    """Avalanche's Synaptic Intelligence (Zenke et al. 2017), with two fixes and one option:

    - Avalanche stores the weights as ``param.detach().cpu().flatten()``: on a CPU that is a view of the
      parameter, not a copy, so the "old" weights move with the optimizer step, every path-integral term
      is 0 and the penalty's anchor follows the weights (SI does nothing). Here they are copies.
    - it reads every trainable parameter's gradient after each step; an earlier task's head gets none
      in a task-IL batch, so a missing gradient counts as zero (that head did not move).
    - ``clip_to``: Avalanche caps every importance at 0.001, which makes most of them equal (a plain L2
      pull); None keeps them as the paper defines them (and van de Ven & Tolias's code: their c is
      ``si_lambda / 2``, their damping 0.1 is ``eps``).
    """

    def __init__(self, si_lambda, eps: float = 1e-7, clip_to: float | None = 0.001, **kwargs):
        super().__init__(si_lambda, eps=eps, **kwargs)
        self.clip_to = clip_to

    def after_training_exp(self, strategy, **kwargs):  # Avalanche's, with our clip (it passes 0.001 and c=1)
        self.update_ewc_data(strategy.model, self.ewc_data, self.syn_data,
                             float("inf") if self.clip_to is None else self.clip_to, self.excluded_parameters, 1,
                             eps=self.eps)

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        _own_copies(self.ewc_data[0])  # the anchor: the weights at the start of the task

    def before_training_iteration(self, strategy, **kwargs):
        super().before_training_iteration(strategy, **kwargs)
        _own_copies(self.syn_data["old_theta"])

    def after_training_iteration(self, strategy, **kwargs):
        for p in strategy.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        super().after_training_iteration(strategy, **kwargs)


def _own_copies(params: dict) -> None:
    for p in params.values():
        p.data = p.data.clone()
