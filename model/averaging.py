"""An exponential moving average of the network's weights, a stabiliser of Self2Self+'s read-outs.

One S2S+ training read out a few hundred steps apart moves by up to several dB on real noise: the
weights wander around a good region rather than settle. Reading out an average of the recent
weights instead of the last ones damps that wandering (Polyak averaging; Izmailov et al. 2018,
"Averaging Weights Leads to Wider Optima"). Not in the paper: `S2SConfig.ema_decay = 0` (the
default) reads out the raw weights, as the authors do.

The average starts at zero and is divided by 1 - decay^t (the bias correction of Adam, Kingma &
Ba 2015), so after t steps it weights step s by (1 - decay) decay^(t - s) / (1 - decay^t): the
random initial weights never dominate, whatever the decay, and the average can be read out at any
step, as a sweep reads one training at every step budget.
"""

import copy

import torch


class WeightAverage:
    """Exponential moving average of a network's parameters, bias-corrected."""

    def __init__(self, net: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay: expected a number in (0, 1), got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.shadow = [torch.zeros_like(parameter, dtype=torch.float32) for parameter in net.parameters()]

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """Fold the network's current weights in (after each optimiser step)."""
        self.updates += 1
        parameters = [parameter.detach().float() for parameter in net.parameters()]
        torch._foreach_lerp_(self.shadow, parameters, 1.0 - self.decay)  # shadow += (1 - decay)(w - shadow)

    @torch.no_grad()
    def network(self, net: torch.nn.Module) -> torch.nn.Module:
        """A copy of `net` holding the averaged weights (`net` itself is left as it is)."""
        if self.updates == 0:
            raise ValueError("the weight average has no update yet")
        averaged = copy.deepcopy(net)
        correction = 1.0 - self.decay**self.updates
        for parameter, shadow in zip(averaged.parameters(), self.shadow):
            parameter.copy_(shadow / correction)
        return averaged
