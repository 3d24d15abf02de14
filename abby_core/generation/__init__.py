"""Turn prompts and images into image bytes.

``ImageGenerator`` is the entry point; providers (one class and module each) implement
:class:`~abby_core.generation.base.Provider`: ``stability`` (the REST API), ``comfyui``
and ``automatic1111`` (self-hosted GPU servers, imported when configured; their transport,
job following and answer translation live in ``comfyui_*`` and ``automatic1111_*`` beside
them) and ``offline`` (a local renderer). Validators run before any network call so callers
can check a request before reserving quota::

    request = validate_text_to_image("a red fox", aspect_ratio="16:9")
    # image requests are fitted to the provider's own input limits:
    # validate_upscale(data, limits=generator.input_limits, mode="fast")
    # reserve quota ...
    image = await generator.generate(request)
"""

from abby_core.generation.base import (
    GeneratedImage,
    GenerationRequest,
    ImageToImageRequest,
    InputLimits,
    Progress,
    ProgressCallback,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
)
from abby_core.generation.generator import FallbackProvider, ImageGenerator
from abby_core.generation.offline import OfflineProvider
from abby_core.generation.params import (
    ASPECT_RATIOS,
    MAX_SEED,
    OUTPUT_FORMATS,
    STYLE_PRESETS,
    UPSCALE_MODES,
    validate_image_to_image,
    validate_text_to_image,
    validate_upscale,
)
from abby_core.generation.stability import StabilityProvider

__all__ = [
    "ASPECT_RATIOS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "STYLE_PRESETS",
    "UPSCALE_MODES",
    "FallbackProvider",
    "GeneratedImage",
    "GenerationRequest",
    "ImageGenerator",
    "ImageToImageRequest",
    "InputLimits",
    "OfflineProvider",
    "Progress",
    "ProgressCallback",
    "Provider",
    "StabilityProvider",
    "TextToImageRequest",
    "UpscaleRequest",
    "validate_image_to_image",
    "validate_text_to_image",
    "validate_upscale",
]
