"""The Frame Selector network (paper design) on the frozen FrameMAE encoder.

    clip uint8 [B, 16, S, S, 3]   every frame of the clip area-resized to S×S (global view)
    → frozen FrameMAE encoder on the *unmasked* clip → tokens [B, 8, g·g, D]
    → Linear(D → 384) → max over the g·g spatial positions of each slot → [B, 384, 8]
    → 3 residual blocks (Conv1d k=3, BatchNorm, ReLU, dropout 0.1) → flatten → 28 logits
    (class = lexicographic kept slot pair, ``framers.geometry.PAIRS``).

Optionally a view prior (``ViewPrior``: the quality of ``linear`` from each pair on the view
itself) is added to the logits. Training is in ``training.selector``, export in
``training.selector_export``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from framers.geometry import CLIP_LEN, N_PAIRS, N_SLOTS, PAIRS
from training.model import FlowMixNet, FrameMAE, ModelConfig

WIDTH = 384


class UnmaskedEncoder(nn.Module):
    """uint8 clip [B, 16, S, S, 3] → frozen FrameMAE encoder tokens [B, 8, g·g, D]."""

    def __init__(self, mae: nn.Module):
        super().__init__()
        self.mae = mae
        cfg: ModelConfig = mae.cfg  # type: ignore[assignment]
        self.variant = cfg.variant
        self.tile = cfg.tile
        self.grid = cfg.tile // cfg.patch
        self.dim = cfg.embed_dim
        for p in self.mae.parameters():
            p.requires_grad_(False)

        if self.variant == "flowmix":
            # With every frame kept the three candidate channel groups are identical, the kept
            # flag is 1 and t is 0: fold them into one 3-channel Conv3d (same result, 3.7x less work).
            assert isinstance(mae, FlowMixNet)
            conv = mae.patch_embed.proj
            w = conv.weight.detach()  # [D, 11, 2, p, p]
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
            kt, kh, kw = conv.kernel_size
            self.fold = nn.Conv3d(3, w.shape[0], kernel_size=(kt, kh, kw), stride=(kt, kh, kw))
            with torch.no_grad():
                self.fold.weight.copy_(w[:, 0:3] + w[:, 3:6] + w[:, 6:9])
                # input x - 0.5 per candidate: the -0.5 offset and the flag channel go into the bias
                assert self.fold.bias is not None
                self.fold.bias.copy_(bias + w[:, 9].sum(dim=(1, 2, 3)) - 0.5 * w[:, 0:9].sum(dim=(1, 2, 3, 4)))
            self.fold.requires_grad_(False)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b = clip.shape[0]
        x = clip.permute(0, 4, 1, 2, 3).float() * (1.0 / 255.0)  # [B, 3, 16, S, S] in [0, 1]
        if self.variant == "flowmix":
            assert isinstance(self.mae, FlowMixNet)
            mae = self.mae
            tokens = self.fold(x).flatten(2).transpose(1, 2) + mae.pos_embed  # [B, 8·g·g, D]
            for blk in mae.blocks:
                tokens = blk(tokens)
            tokens = mae.norm(tokens)
        else:
            assert isinstance(self.mae, FrameMAE)
            slots = torch.arange(N_SLOTS).view(1, N_SLOTS).expand(b, N_SLOTS)  # [B, 8]: every slot visible
            tokens = self.mae.forward_encoder(x, slots)  # [B, 8·g·g, D]
        return tokens.reshape(b, N_SLOTS, self.grid * self.grid, self.dim)

    def reference(self, clip: torch.Tensor) -> torch.Tensor:
        """The unfolded computation (the FrameMAE encoder on the full flowmix input), for tests."""
        b = clip.shape[0]
        x = clip.permute(0, 4, 1, 2, 3).float() * (1.0 / 255.0) - 0.5
        ones = torch.ones_like(x[:, :1])  # kept flag [B, 1, 16, S, S]
        inp = torch.cat([x, x, x, ones, torch.zeros_like(ones)], dim=1)  # [B, 11, 16, S, S]
        assert isinstance(self.mae, FlowMixNet)
        return self.mae.forward_encoder(inp).reshape(b, N_SLOTS, self.grid * self.grid, self.dim)


class ResBlock1d(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 8] → [B, C, 8]
        y = self.drop(F.relu(self.bn1(self.conv1(x))))
        return F.relu(x + self.bn2(self.conv2(y)))


def pair_residuals() -> np.ndarray:
    """[28, 16, 16] R = W − I, where W rebuilds the 16 frames of a clip from a kept slot pair by
    ``linear`` inside the clip (interpolation between the pair, hold before / after it)."""
    out = np.zeros((N_PAIRS, CLIP_LEN, CLIP_LEN), np.float32)
    for j, (a, b) in enumerate(PAIRS):
        lo, hi = 2 * a + 1, 2 * b  # last kept frame of the first slot, first of the second
        for t in range(CLIP_LEN):
            if t in (2 * a, lo, hi, hi + 1):
                out[j, t, t] = 1.0
            elif t < 2 * a:
                out[j, t, 2 * a] = 1.0
            elif t > hi + 1:
                out[j, t, hi + 1] = 1.0
            else:
                w = (t - lo) / (hi - lo)
                out[j, t, lo], out[j, t, hi] = 1.0 - w, w
    return out - np.eye(CLIP_LEN, dtype=np.float32)[None]


class ViewPrior(nn.Module):
    """clip uint8 [B, 16, S, S, 3] → [B, 28]: −10·log10 of the MSE of ``linear`` from each kept
    pair on the global view itself (no context, no rounding): an exhaustive search at S×S.

    Computed from the frames' Gram matrix: err[p, t] = r_ptᵀ G r_pt with r_pt a row of R (rows sum
    to 0, so frames are centred on their mean first for float32 accuracy)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("residuals", torch.from_numpy(pair_residuals()).reshape(N_PAIRS * CLIP_LEN, CLIP_LEN),
                             persistent=False)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b = clip.shape[0]
        x = clip.reshape(b, CLIP_LEN, -1).float() * (1.0 / 255.0)  # [B, 16, n]
        x = x - x.mean(dim=1, keepdim=True)
        gram = x @ x.transpose(1, 2) * (1.0 / x.shape[2])  # [B, 16, 16]
        r: torch.Tensor = self.residuals  # type: ignore[assignment]  # [28·16, 16]
        err = ((r @ gram) * r).sum(-1).reshape(b, N_PAIRS, CLIP_LEN)  # [B, 28, 16] per-frame MSE
        return -10.0 * torch.log10(err.mean(-1).clamp(min=0.0) + 1e-5)  # [B, 28] dB (≤ 50)


class SelectorHead(nn.Module):
    """tokens [B, 8, g·g, D] (+ view prior [B, 28]) → logits [B, 28].

    With ``prior`` the logits are ``prior_scale · prior + head(tokens)``; the last layer starts at
    zero, so training starts from the view prior and the paper's head learns the correction."""

    def __init__(self, dim: int, width: int = WIDTH, blocks: int = 3, dropout: float = 0.1,
                 prior: bool = False, prior_scale: float = 2.0):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.blocks = nn.Sequential(*[ResBlock1d(width, dropout) for _ in range(blocks)])
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width * N_SLOTS, N_PAIRS)
        self.use_prior = prior
        if prior:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
        self.prior_scale = nn.Parameter(torch.tensor(float(prior_scale)), requires_grad=prior)

    def forward(self, tokens: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        x = self.proj(tokens).amax(dim=2)  # [B, 8, W]: max over spatial positions of each slot
        x = self.blocks(x.transpose(1, 2))  # [B, W, 8]
        logits = self.fc(self.drop(x.flatten(1)))  # [B, 28]
        if self.use_prior:
            assert prior is not None
            logits = logits + self.prior_scale * prior
        return logits


class SelectorNet(nn.Module):
    """The exported model: uint8 clip [B, 16, S, S, 3] → pair logits [B, 28]."""

    def __init__(self, encoder: UnmaskedEncoder, head: SelectorHead):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.prior = ViewPrior()

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        prior = self.prior(clip) if self.head.use_prior else None
        return self.head(self.encoder(clip), prior)
