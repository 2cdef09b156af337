"""A small Vision Transformer family, `vit_<D>[_<W>]`: D pre-norm encoder blocks of width W.

Built through `register_family` like any user's network. Stem: patch embedding (a strided conv),
class token and position embeddings; units: the encoder blocks (one stage; block 0 is its
transition, kept in place by every transformation); head: the final LayerNorm and the classifier.
Every weight matrix is an `nn.Linear` (queries, keys and values in one), so masks cover them all.
Patches as small ViTs commonly take them: 7x7 on 28-pixel images (16 tokens, as MNIST ViTs do; a
third of the cost of 4x4 patches' 49 tokens), otherwise 4x4 up to 32 pixels (64 tokens at 32x32,
4 at 8x8) and 16x16 above. Attention heads of 32 channels (at least one); MLPs twice as wide as the blocks.
Weights are Kaiming-normal like elth's other families (biases zero, position embeddings N(0, 0.02)):
under elth's SGD protocols they train faster than a ViT's customary N(0, 0.02) weights (vit_2,
938 iterations on Fashion-MNIST: 82.6% against 77.3% test accuracy).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elth.errors import ElthError
from elth.models.base import ElasticModel
from elth.models.families import ModelFamily, register_builtin
from elth.models.structure import ElasticStructure

DEFAULT_WIDTH = 64
HEAD_CHANNELS = 32
MLP_RATIO = 2
POSITION_STD = 0.02


class ViTShapeError(ElthError, ValueError):
    """A ViT name or input its patches and heads cannot fit."""


#: Patch side by image side where it is not the rule below (28-pixel images: MNIST, Fashion-MNIST).
PATCH_BY_SIDE = {28: 7}


def patch_size(height: int) -> int:
    return PATCH_BY_SIDE.get(height, 4 if height <= 32 else 16)


class PatchEmbedding(nn.Module):
    def __init__(self, channels: int, width: int, height: int, img_width: int):
        super().__init__()
        p = patch_size(height)
        if height < p or img_width < p:
            raise ViTShapeError(f"a ViT needs inputs of at least {p}x{p} pixels, got {height}x{img_width}")
        self.proj = nn.Conv2d(channels, width, p, stride=p)
        tokens = (height // p) * (img_width // p)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos


class Attention(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.heads = max(1, width // HEAD_CHANNELS)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, MLP_RATIO * width)
        self.fc2 = nn.Linear(MLP_RATIO * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(ElasticModel):
    prune_output_layer = False
    is_conv = False

    def __init__(self, name: str, depth: int, width: int, input_shape, num_classes: int):
        super().__init__(name, input_shape, num_classes)
        if width % max(1, width // HEAD_CHANNELS):
            raise ViTShapeError(f"a ViT's width must split into heads of {HEAD_CHANNELS} channels, got {width}")
        c, h, w = input_shape
        self.embed = PatchEmbedding(c, width, h, w)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.embed.pos, std=POSITION_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.fc(self.norm(x[:, 0]))

    def structure(self) -> ElasticStructure:
        return ElasticStructure(stem=("embed",), stages=(tuple(f"blocks.{i}" for i in range(len(self.blocks))),),
                                head=("norm", "fc"))


def build_vit(name: str, depth: int, width: int, input_shape, num_classes: int) -> VisionTransformer:
    return VisionTransformer(name, depth, width, input_shape, num_classes)


# Registered as elth's own, in the form any user's family takes (`<kind>_<D>[_<W>]`, a builder).
FAMILY = register_builtin(ModelFamily(
    "vit", build_vit, DEFAULT_WIDTH,
    f"vit_<D>[_<W>] (a Vision Transformer of D encoder blocks, width W, default {DEFAULT_WIDTH})",
    recipe="conv",  # the paper never trained ViTs: its CIFAR recipe
    short_label=lambda spec: f"ViT-{spec.depth}" + (f" (w{spec.width})" if spec.width != DEFAULT_WIDTH else ""),
))
