"""Three weight sets on one velocity network: `current` (trained), `old` (samples rollouts) and `ref`
(the frozen base), switched without copying the network per call.

- `LoraWeights`: two peft LoRA adapters, `current` and `old`, on the base transformer; `ref` is the
  base with adapters disabled (as the reference code does with set_adapter / disable_adapter).
- `FullWeights`: full fine-tuning; frozen copies of `old` and `ref` are made once, at construction.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch

from elborl.config import LORA_TARGETS

WeightSet = Literal["current", "old", "ref"]


@dataclass(frozen=True)
class LoraSpec:
    """LoRA settings (defaults: the reference recipe on SD3.5-M).

    Args:
        rank: r.
        alpha: lora_alpha (scale alpha / r).
        init: peft's init_lora_weights: "gaussian" (reference code) or True (zeros for B, Kaiming A).
        targets: Module names to adapt (the attention projections).
        seed: Seed of the adapters' random init: every run of the same params starts from the same
            adapters (and a resumed run, whose adapters a checkpoint overwrites, matches a straight one).
    """

    rank: int = 32
    alpha: int = 64
    init: str | bool = "gaussian"
    targets: tuple[str, ...] = field(default=tuple(LORA_TARGETS))
    seed: int = 0

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, init_lora_weights=self.init,
                          target_modules=list(self.targets))  # fmt: skip


class LoraWeights:
    """`current` and `old` LoRA adapters on `net`; `ref` = adapters off.

    Args:
        net: A diffusers model with PeftAdapterMixin (e.g. SD3Transformer2DModel); its base weights
            are frozen.
        spec: LoRA settings.
    """

    def __init__(self, net: torch.nn.Module, spec: LoraSpec):
        self.net = net
        net.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):  # seeded init, without touching the caller's RNG
            torch.manual_seed(spec.seed)
            net.add_adapter(spec.peft_config(), adapter_name="current")
            net.add_adapter(spec.peft_config(), adapter_name="old")
        self._pairs = self._adapter_pairs()
        with torch.no_grad():  # theta_old starts equal to theta
            for cur, old in self._pairs:
                # peft creates adapters in the base layer's dtype: the trained weights (and the
                # sampling weights soft-updated from them) stay fp32 over a bf16 base.
                cur.data, old.data = cur.data.float(), cur.data.float().clone()
        net.set_adapter("current")
        for cur, _ in self._pairs:
            cur.requires_grad_(True)

    def _adapter_pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        params = dict(self.net.named_parameters())
        return [(p, params[n.replace(".current.", ".old.")]) for n, p in params.items() if ".current." in n]

    @contextmanager
    def use(self, name: WeightSet) -> Iterator[torch.nn.Module]:
        """Route the network's forward through weight set `name` for the duration of the block."""
        if name == "current":
            yield self.net
            return
        if name == "old":
            self.net.set_adapter("old")
        else:
            self.net.disable_adapters()
        try:
            yield self.net
        finally:
            self.net.enable_adapters()
            self.net.set_adapter("current")
            for cur, _ in self._pairs:  # set_adapter re-derives requires_grad; keep only current trainable
                cur.requires_grad_(True)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [cur for cur, _ in self._pairs]

    def old_pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        return self._pairs

    def state_dict(self, name: Literal["current", "old"] = "current") -> dict[str, torch.Tensor]:
        """The adapter's tensors in peft's naming (adapter name stripped), for saving."""
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(self.net, adapter_name=name)

    def load_state_dict(self, tensors: dict[str, torch.Tensor], name: Literal["current", "old"] = "current") -> None:
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(self.net, tensors, adapter_name=name)


class FullWeights:
    """Full fine-tuning of `net`; `old` and `ref` are frozen copies made once."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        net.requires_grad_(True)
        self.old = copy.deepcopy(net).requires_grad_(False).eval()
        self.ref = copy.deepcopy(net).requires_grad_(False).eval()

    @contextmanager
    def use(self, name: WeightSet) -> Iterator[torch.nn.Module]:
        yield {"current": self.net, "old": self.old, "ref": self.ref}[name]

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def old_pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        return list(zip(self.net.parameters(), self.old.parameters(), strict=True))

    def state_dict(self, name: Literal["current", "old"] = "current") -> dict[str, torch.Tensor]:
        return (self.net if name == "current" else self.old).state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor], name: Literal["current", "old"] = "current") -> None:
        (self.net if name == "current" else self.old).load_state_dict(tensors)


class FrozenWeights:
    """No training (sampling a base or an exported model): every weight set is the network itself."""

    def __init__(self, net: torch.nn.Module):
        self.net = net.requires_grad_(False)

    @contextmanager
    def use(self, name: WeightSet) -> Iterator[torch.nn.Module]:
        yield self.net

    def trainable(self) -> list[torch.nn.Parameter]:
        return []

    def old_pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        return []

    def state_dict(self, name: Literal["current", "old"] = "current") -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], name: Literal["current", "old"] = "current") -> None:
        if tensors:
            raise ValueError("a frozen policy has no trainable weights to load")


def soft_update_old(weights: LoraWeights | FullWeights | FrozenWeights, decay: float) -> None:
    """theta_old <- decay theta_old + (1 - decay) theta (docs/ARCHITECTURE.md section 2.8)."""
    with torch.no_grad():
        for cur, old in weights.old_pairs():
            old.lerp_(cur, 1 - decay)
