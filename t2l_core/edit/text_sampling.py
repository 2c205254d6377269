"""Per-step text augmentation (paper appendix A.2, "Text augmentations").

Banks are ``[P*T, D]`` template-expanded embeddings (prompt-major). Each step draws a random-size subset
with replacement; directional pairs use the same index in the target and source banks, so the template
(and the prompt, when both lists are equally long) matches.
"""

from __future__ import annotations

import torch


def _check_bank(name: str, bank: torch.Tensor) -> None:
    """Raise ValueError unless ``bank`` is a non-empty [N,D] tensor."""
    if bank.ndim != 2 or bank.shape[0] == 0:
        raise ValueError(f"{name} text bank must be a non-empty [N,D] tensor, got {tuple(bank.shape)}")


def sample_indices(n_available: int, generator: torch.Generator) -> torch.Tensor:
    """n ~ UniformInt[1, n_available], then n indices in [0, n_available) with replacement.

    Args:
        n_available: the bank size N >= 1.
        generator: the RNG.

    Returns:
        [n] int64 indices.
    """
    n = int(torch.randint(1, n_available + 1, (), generator=generator).item())
    return torch.randint(0, n_available, (n,), generator=generator)


def sample_targets(bank: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random-size random subset (with replacement) of a text bank.

    Args:
        bank: [N,D].
        generator: the RNG.

    Returns:
        [n,D], 1 <= n <= N.
    """
    _check_bank("target", bank)
    idx = sample_indices(bank.shape[0], generator)
    return bank[idx.to(bank.device)]


def sample_directions(target_bank: torch.Tensor, source_bank: torch.Tensor,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Matched (target, source) rows for L_dir (paper eq. 3): the same index into both banks, drawn from the
    first ``min(N_target, N_source)`` rows.

    Args:
        target_bank: [N_target,D].
        source_bank: [N_source,D].
        generator: the RNG.

    Returns:
        ``([n,D], [n,D])``.
    """
    _check_bank("target", target_bank)
    _check_bank("source", source_bank)
    idx = sample_indices(min(target_bank.shape[0], source_bank.shape[0]), generator)
    return target_bank[idx.to(target_bank.device)], source_bank[idx.to(source_bank.device)]
