"""Common interface of every elth model."""
from __future__ import annotations

from torch import nn

from elth.models.structure import ElasticStructure


class ElasticModel(nn.Module):
    """A model that knows its name and its elastic structure (its family is its name's: see
    `parse_model_name(name).family`). Subclasses build their modules, then call `init_weights`.
    """

    #: Whether the output layer is pruned by default (ResNets: yes; VGGs and MLPs: no).
    prune_output_layer: bool = True
    #: Whether the model is convolutional (channels_last pays off).
    is_conv: bool = True

    def __init__(self, name: str, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.name = name
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def structure(self) -> ElasticStructure:  # pragma: no cover - every subclass overrides
        raise TypeError(f"{type(self).__name__} does not describe its elastic structure")

    @property
    def output_layer(self) -> str:
        """Name of the final linear layer's weight."""
        return "fc.weight"

    def prunable_names(self) -> list[str]:
        """Every conv and linear weight, in model order (the tensors a mask can cover)."""
        return [
            f"{n}.weight" for n, m in self.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
        ]

    def width_groups(self) -> tuple:
        """The model's width as `structure.WidthGroup`s (empty: its width is not an elastic axis)."""
        return ()

    def default_excluded(self) -> list[str]:
        return [] if self.prune_output_layer else [self.output_layer]
