"""The image provider sections: which provider, Stability's key, the local GPU servers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from abby_core.config._fields import Section, var
from abby_core.config._urls import OptionalUrl, Url

__all__ = ["A1111Settings", "ApiSettings", "ComfyUISettings", "ProviderName"]

ProviderName = Literal["stability", "comfyui", "automatic1111", "offline"]


class ComfyUISettings(Section):
    """A ComfyUI server (``COMFYUI_*``)."""

    url: OptionalUrl = var(None, "COMFYUI_URL", "an http(s) URL such as http://127.0.0.1:8188")
    auth_header: SecretStr | None = var(
        None, "COMFYUI_AUTH_HEADER", "the value of a header a reverse proxy requires, or empty"
    )
    auth_header_name: str = var(
        "Authorization", "COMFYUI_AUTH_HEADER_NAME", "a header name such as Authorization",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
    )
    workflows: Path | None = var(
        None, "COMFYUI_WORKFLOWS",
        "a folder with txt2img.json, img2img.json and/or upscale.json, or empty for the bundled ones",
    )
    timeout_seconds: float = var(
        300, "COMFYUI_TIMEOUT_SECONDS", "seconds above 0 and at most 3600", gt=0, le=3600
    )


class A1111Settings(Section):
    """An AUTOMATIC1111 / Forge / SD.Next web UI started with ``--api`` (``A1111_*``)."""

    url: OptionalUrl = var(None, "A1111_URL", "an http(s) URL such as http://127.0.0.1:7860")
    username: str | None = var(None, "A1111_USERNAME", "the --api-auth user, or empty")
    password: SecretStr | None = var(None, "A1111_PASSWORD", "the --api-auth password")
    model: str | None = var(None, "A1111_MODEL", "a checkpoint name, or empty for the server's")
    sampler: str | None = var(None, "A1111_SAMPLER", "a sampler name, or empty")
    steps: int = var(25, "A1111_STEPS", "a whole number from 1 to 150", ge=1, le=150)
    upscaler: str = var("R-ESRGAN 4x+", "A1111_UPSCALER", "an upscaler name")
    timeout_seconds: float = var(300, "A1111_TIMEOUT_SECONDS", "seconds above 0 and at most 3600", gt=0, le=3600)


class ApiSettings(Section):
    """The image provider and how results are stored."""

    provider: ProviderName = var(
        "stability", "IMAGE_PROVIDER", "'stability', 'comfyui', 'automatic1111' or 'offline'"
    )
    fallback: ProviderName | None = var(
        None, "IMAGE_PROVIDER_FALLBACK", "empty, or a second provider used when the first cannot be reached"
    )
    comfyui: ComfyUISettings = Field(default_factory=ComfyUISettings)
    a1111: A1111Settings = Field(default_factory=A1111Settings)
    stability_api_key: SecretStr | None = var(None, "STABILITY_API_KEY", "a Stability AI API key")
    stability_api_host: Url = var("https://api.stability.ai", "STABILITY_API_HOST", "an http(s) URL")
    stability_model: str = var(
        "core", "STABILITY_MODEL", "one of core, ultra, sd3.5-large, sd3.5-large-turbo, sd3.5-medium",
        pattern=r"^(core|ultra|sd3\.5-large|sd3\.5-large-turbo|sd3\.5-medium)$",
    )
    timeout_seconds: float = var(
        60, "STABILITY_TIMEOUT_SECONDS", "seconds above 0 and at most 600", gt=0, le=600
    )
    max_retries: int = var(3, "STABILITY_MAX_RETRIES", "a whole number from 0 to 10", ge=0, le=10)
    store_format: Literal["png", "webp"] = var("png", "IMAGE_STORE_FORMAT", "'png' or 'webp'")
    store_quality: int = var(90, "IMAGE_STORE_QUALITY", "a whole number from 1 to 100", ge=1, le=100)
    store_lossless: bool = var(False, "IMAGE_STORE_LOSSLESS", "true or false")

    @field_validator("stability_api_key")
    @classmethod
    def _header_safe_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[\x21-\x7e]{1,512}", value.get_secret_value().strip()):
            raise ValueError("it has characters an API key cannot have (spaces, quotes, non-ASCII)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApiSettings:
        for name, role in ((self.provider, "IMAGE_PROVIDER"), (self.fallback, "IMAGE_PROVIDER_FALLBACK")):
            if name == "comfyui" and not self.comfyui.url:
                raise ValueError(f"{role}=comfyui needs COMFYUI_URL (for example http://127.0.0.1:8188)")
            if name == "automatic1111" and not self.a1111.url:
                raise ValueError(f"{role}=automatic1111 needs A1111_URL (for example http://127.0.0.1:7860)")
        if self.fallback is not None and self.fallback == self.provider:
            raise ValueError("IMAGE_PROVIDER_FALLBACK must name another provider than IMAGE_PROVIDER")
        if (self.a1111.username is None) != (self.a1111.password is None):
            raise ValueError("A1111_USERNAME and A1111_PASSWORD must be set together (as in --api-auth user:password)")
        return self
