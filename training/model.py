"""FrameMAE models in the style of facebookresearch/mae ``models_mae.py``.

Two variants share the ViT parts (tubelet embedding Conv3d (2, p, p), fixed 3-D sin-cos
positions, pre-norm transformer blocks):

* ``FrameMAE`` (``plain``, the paper's design and our ablation): the encoder sees only the
  tokens of the kept two-frame slots, gathered by slot index; the decoder adds mask tokens for
  the other slots and a linear head predicts real pixels (ImageNet-normalised), no
  ground-truth patch statistics.
* ``FlowMixNet`` (``flowmix``, the default): a ViT over all 16 frames whose input is, per
  frame, the ``framers.motion`` candidates (linear blend, previous kept frame warped by DIS
  flow, next kept frame warped) plus the kept flag and the position t, at reduced resolution.
  It predicts per-pixel softmax mixing weights over the candidates; the head is zero-initialised
  with a bias towards ``linear`` so training starts (almost exactly) at the linear prior.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from framers.geometry import CLIP_LEN, N_SLOTS, SLOT_LEN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TUBELET = SLOT_LEN  # frames of a slot = depth of a tubelet


@dataclass
class ModelConfig:
    variant: str = "flowmix"  # "flowmix" or "plain"
    size: str = "fm-small"
    patch: int = 8
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    decoder_embed_dim: int = 0  # plain only
    decoder_depth: int = 0
    decoder_num_heads: int = 1
    mlp_ratio: float = 4.0
    in_chans: int = 11  # flowmix: framers.motion.IN_CHANNELS; plain: 3
    n_candidates: int = 3
    tile: int = 64  # square input side in (network) pixels
    linear_bias: float = 4.0  # flowmix: initial logit advantage of the linear candidate

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


SIZES: dict[str, dict[str, object]] = {
    # the paper: ViT-B encoder, 384/4/6 decoder, 16x16 patches
    "base": dict(
        patch=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=384,
        decoder_depth=4,
        decoder_num_heads=6,
        tile=224,
    ),
    "small": dict(
        patch=16,
        embed_dim=384,
        depth=12,
        num_heads=6,
        decoder_embed_dim=192,
        decoder_depth=4,
        decoder_num_heads=6,
        tile=112,
    ),
    "tiny": dict(
        patch=16,
        embed_dim=192,
        depth=12,
        num_heads=3,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
        tile=112,
    ),
    "micro": dict(
        patch=16,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        tile=32,
    ),
    # flowmix sizes (network runs at reduced resolution on 64x64 tiles, 8x8 patches)
    "fm-small": dict(patch=8, embed_dim=128, depth=6, num_heads=4, tile=64),
    "fm-tiny": dict(patch=8, embed_dim=96, depth=4, num_heads=3, tile=64),
    "fm-micro": dict(patch=8, embed_dim=16, depth=1, num_heads=2, tile=32),
}


def make_config(variant: str, size: str) -> ModelConfig:
    cfg = ModelConfig(variant=variant, size=size, **SIZES[size])  # type: ignore[arg-type]
    if variant == "plain":
        cfg.in_chans = 3
    return cfg


# --------------------------------------------------------------------------- positions
def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[len(pos), dim] sin-cos embedding (MAE's get_1d_sincos_pos_embed_from_grid)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_3d(dim: int, t: int, h: int, w: int) -> np.ndarray:
    """[t*h*w, dim] fixed positions: dim split into time (1/4), height and width (3/8 each)."""
    dt = dim // 4 // 2 * 2
    dh = (dim - dt) // 2 // 2 * 2
    dw = dim - dt - dh
    gt, gh, gw = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    emb = np.concatenate([sincos_1d(dt, gt), sincos_1d(dh, gh), sincos_1d(dw, gw)], axis=1)
    return emb.astype(np.float32)


# --------------------------------------------------------------------------- ViT parts
class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, C/heads]
        if not torch.onnx.is_in_onnx_export():
            # the fused kernel: same maths, ~3x faster on CPU (label generation, training)
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            return self.proj(out.transpose(1, 2).reshape(b, n, c))
        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class TubeletEmbed(nn.Module):
    """[B, C, T, H, W] → [B, T/2 · H/p · W/p, D] tokens (slot-major order)."""

    def __init__(self, in_chans: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(TUBELET, patch, patch), stride=(TUBELET, patch, patch))
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------- plain FrameMAE
class FrameMAE(nn.Module):
    """The paper's frame-masking MAE; the encoder only sees the kept slots (no boolean masks)."""

    pos_embed: torch.Tensor
    decoder_pos_embed: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        p, d, dd = cfg.patch, cfg.embed_dim, cfg.decoder_embed_dim
        self.grid = cfg.tile // p
        self.n_spatial = self.grid * self.grid
        self.patch_embed = TubeletEmbed(3, d, p)
        pos = torch.from_numpy(sincos_3d(d, N_SLOTS, self.grid, self.grid))
        self.register_buffer("pos_embed", pos.view(N_SLOTS, self.n_spatial, d), persistent=False)
        self.blocks = nn.ModuleList([Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dd))
        dpos = torch.from_numpy(sincos_3d(dd, N_SLOTS, self.grid, self.grid))
        self.register_buffer("decoder_pos_embed", dpos.view(1, N_SLOTS, self.n_spatial, dd), persistent=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, TUBELET * p * p * 3)
        self.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1), persistent=False)

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 16, H, W] → [B, 8·h·w, 2·p·p·3] (slot-major tokens)."""
        b, c, t, hh, ww = video.shape
        p = self.cfg.patch
        x = video.reshape(b, c, t // TUBELET, TUBELET, hh // p, p, ww // p, p)
        x = torch.einsum("bcstiujv->bsijtuvc", x)
        return x.reshape(b, (t // TUBELET) * (hh // p) * (ww // p), TUBELET * p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 8·h·w, 2·p·p·3] → [B, 3, 16, H, W]."""
        b = x.shape[0]
        p, g = self.cfg.patch, self.grid
        x = x.reshape(b, N_SLOTS, g, g, TUBELET, p, p, 3)
        x = torch.einsum("bsijtuvc->bcstiujv", x)
        return x.reshape(b, 3, CLIP_LEN, g * p, g * p)

    def forward_encoder(self, kept: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """kept [B, 3, 2·V, H, W] in [0, 1] (frames of the V kept slots), slots [B, V] int64
        → latent [B, V·h·w, D]."""
        x = (kept - self.mean) / self.std
        x = self.patch_embed(x)  # [B, V·h·w, D]
        b, v = slots.shape
        pos = self.pos_embed[slots.reshape(-1)].reshape(b, v * self.n_spatial, -1)  # [B, V·h·w, D]
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, latent: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """latent [B, V·h·w, D] → predictions [B, 8·h·w, 2·p·p·3] for every slot."""
        b, v = slots.shape
        x = self.decoder_embed(latent).reshape(b, v, self.n_spatial, -1)  # [B, V, h·w, Dd]
        dd = x.shape[-1]
        full = self.mask_token.expand(b, N_SLOTS, self.n_spatial, dd)  # [B, 8, h·w, Dd]
        # scatter the visible slots into the mask-token grid via a one-hot slot matrix
        onehot = F.one_hot(slots, N_SLOTS).to(x.dtype)  # [B, V, 8]
        visible = torch.einsum("bvs,bvnd->bsnd", onehot, x)
        is_visible = onehot.sum(1).view(b, N_SLOTS, 1, 1)
        full = full * (1.0 - is_visible) + visible
        x = (full + self.decoder_pos_embed).reshape(b, N_SLOTS * self.n_spatial, dd)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward_loss(self, video: torch.Tensor, pred: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """MSE on the masked slots, in normalised pixels. video [B, 3, 16, H, W] in [0, 1]."""
        target = self.patchify((video - self.mean) / self.std)  # [B, L, 2·p·p·3]
        b = video.shape[0]
        masked = 1.0 - F.one_hot(slots, N_SLOTS).sum(1).clamp(max=1).to(video.dtype)  # [B, 8]
        mask = masked.repeat_interleave(self.n_spatial, dim=1)  # [B, L]
        err = ((pred - target) ** 2).mean(-1)
        return (err * mask).sum() / mask.sum().clamp(min=1.0) if b else err.sum()

    def forward(self, kept: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """kept [B, 3, 2·V, H, W], slots [B, V] → all 16 frames [B, 3, 16, H, W] in [0, 1]."""
        pred = self.forward_decoder(self.forward_encoder(kept, slots), slots)
        return self.unpatchify(pred) * self.std + self.mean


# --------------------------------------------------------------------------- flowmix
class FlowMixNet(nn.Module):
    """ViT over the candidates of all 16 frames → softmax mixing weights [B, K, 16, h, w]."""

    pos_embed: torch.Tensor
    prior_bias: torch.Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        p, d = cfg.patch, cfg.embed_dim
        self.grid = cfg.tile // p
        self.patch_embed = TubeletEmbed(cfg.in_chans, d, p)
        pos = torch.from_numpy(sincos_3d(d, N_SLOTS, self.grid, self.grid))
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList([Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, TUBELET * p * p * cfg.n_candidates)
        self.apply(_init_weights)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        bias = torch.zeros(1, cfg.n_candidates, 1, 1, 1)
        bias[:, 0] = cfg.linear_bias
        self.register_buffer("prior_bias", bias, persistent=False)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 8·g·g, 2·p·p·K] → [B, K, 16, tile, tile]."""
        b = x.shape[0]
        p, g, k = self.cfg.patch, self.grid, self.cfg.n_candidates
        x = x.reshape(b, N_SLOTS, g, g, TUBELET, p, p, k)
        x = torch.einsum("bsijtuvk->bkstiujv", x)
        return x.reshape(b, k, CLIP_LEN, g * p, g * p)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, 16, tile, tile] → tokens [B, 8·g·g, D]."""
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mixing weights [B, K, 16, tile, tile] (softmax over K) for input [B, C, 16, tile, tile]."""
        logits = self.unpatchify(self.head(self.forward_encoder(x))) + self.prior_bias
        return logits.softmax(dim=1)


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.variant == "plain":
        return FrameMAE(cfg)
    if cfg.variant == "flowmix":
        return FlowMixNet(cfg)
    raise ValueError(f"unknown variant {cfg.variant!r}")


def mix_full(cands: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """cands [B, K, 16, 3, H, W], low-res weights [B, K, 16, h, w] → [B, 16, 3, H, W].

    Bilinear half-pixel upscaling, the same as ``framers.motion.mix`` (cv2 INTER_LINEAR)."""
    b, k, t, h, w = weights.shape
    hh, ww = cands.shape[-2:]
    up = F.interpolate(weights.reshape(b, k * t, h, w), size=(hh, ww), mode="bilinear", align_corners=False).reshape(
        b, k, t, 1, hh, ww
    )
    return (cands * up).sum(1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["N_SLOTS", "SIZES", "FlowMixNet", "FrameMAE", "ModelConfig", "build_model", "make_config"]
