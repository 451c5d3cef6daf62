"""Exponential moving average of a model's weights (Polyak averaging).

Why: the last weights of a run carry the noise of the last few hundred steps; their running average
``avg <- decay * avg + (1 - decay) * w`` after every step sits nearer the minimum and usually scores
a little higher (the practice in image restoration training, e.g. SwinIR and NAFNet keep such an
average). Floating-point parameters and buffers (BatchNorm's running statistics) are averaged;
integer buffers (BatchNorm's step counter) are copied. The average is kept in fp32 on the model's
own device: on a GPU, a copy to the host after every step would stall training.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """``WeightAverage(model, decay)``; call :meth:`update` after each optimiser step.

    Args:
        model: the module being trained (its ``state_dict`` keys are the average's keys).
        decay: weight of the old average per step, in [0, 1); 0.999 averages over ~1,000 steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"weight-average decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.state = {
            k: v.detach().to(torch.float32, copy=True)
            if v.is_floating_point()
            else v.detach().clone()
            for k, v in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            mine = self.state[key]
            if mine.is_floating_point():
                mine.mul_(self.decay).add_(value.detach().float(), alpha=1 - self.decay)
            else:
                mine.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, for ``load_state_dict`` of a model like the one given (on any
        device: ``load_state_dict`` copies across)."""
        return {k: v.clone() for k, v in self.state.items()}
