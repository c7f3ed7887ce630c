"""Model registry: `create_model("resnet20", num_classes=10, input_shape=(3, 32, 32))`.

Importing the family modules is what registers their builders.
"""

from compressor.models import cifar_resnet, mlp, tv, vgg, wrn  # noqa: F401  (importing registers them)
from compressor.models.registry import (
    UnknownModelError,
    create_model,
    list_models,
    model_options,
    register_model,
)

__all__ = ["UnknownModelError", "create_model", "list_models", "model_options", "register_model"]
