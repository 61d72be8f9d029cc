"""The random streams of a training run: one generator per purpose, all of them in every checkpoint.

Resumed training must equal uninterrupted training bit for bit, so no two purposes share a stream
and nothing outside a purpose can move its stream:

- data order: `InfiniteShuffledSampler` permutes every epoch from (seed, epoch); the checkpoint
  keeps its position (samples consumed), so a resumed run continues with the same batches.
- augmentation: a torch.Generator saved in the checkpoint. Every batch draws one seed from it, and
  the augmentation (kornia draws from torch's global generator) runs under `torch.random.fork_rng`
  seeded with it: it neither reads nor changes the global state.
- validation: seeded from (seed, iteration) at every validation and run under `fork_rng`, so that
  validating (or not, as on the stop path) changes no training stream, and a validation result
  depends only on the weights and the iteration.
- DataLoader workers: their base seed comes from (seed, rank, sampler position), all checkpointed.
  The datasets draw nothing in the workers; randomness per sample belongs in the batch augmentation.
- the model's own randomness (dropout, if a model has any): torch's global generator, checkpointed
  with numpy's and Python's global generators (`checkpoints.rng_state`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

# Stream identifiers mixed into the seeds: changing them changes every seeded run.
_AUGMENTATION, _VALIDATION, _WORKERS = 1, 2, 3


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integers (numpy's SeedSequence: well mixed, platform independent)."""
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def generator_from(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `derive_seed(*keys)`."""
    return torch.Generator().manual_seed(derive_seed(*keys))


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run code that draws from torch's global generators with `seed`, restoring their states after.

    The CPU generator and, on CUDA, `device`'s generator are forked (saved and restored).
    """
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class TrainingStreams:
    """The explicit random streams of one training process (see the module documentation)."""

    def __init__(self, seed: int, rank: int = 0) -> None:
        self.seed = int(seed)
        self.rank = int(rank)
        self.augmentation = generator_from(self.seed, self.rank, _AUGMENTATION)

    def next_augmentation_seed(self) -> int:
        """The seed of the next batch's augmentation (advances the augmentation stream)."""
        return int(torch.randint(0, 2**62, (1,), generator=self.augmentation).item())

    def validation_seed(self, iteration: int) -> int:
        """Seed of the validation at `iteration` (a pure function: validating moves no stream)."""
        return derive_seed(self.seed, self.rank, _VALIDATION, int(iteration))

    def validation_generator(self, iteration: int) -> torch.Generator:
        """Generator of the validation DataLoader at `iteration` (its iterator draws a base seed)."""
        return generator_from(self.seed, self.rank, _VALIDATION, int(iteration), 1)

    def worker_generator(self, sampler_position: int) -> torch.Generator:
        """Generator of a training DataLoader that starts at `sampler_position` (worker base seeds)."""
        return generator_from(self.seed, self.rank, _WORKERS, int(sampler_position))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The states to checkpoint (tensors only: the checkpoint loads with weights_only)."""
        return {"augmentation": self.augmentation.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned, refusing a malformed state."""
        value = state.get("augmentation") if isinstance(state, dict) else None
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
            raise ValueError("the checkpoint's random streams are missing or malformed")
        try:
            self.augmentation.set_state(value)
        except RuntimeError as exc:
            raise ValueError(f"the checkpoint's augmentation stream is malformed ({exc})") from None


__all__ = ["TrainingStreams", "derive_seed", "generator_from", "seeded_global_rng"]
