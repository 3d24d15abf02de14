"""The provider checks: the Stability key, and each local GPU server (ComfyUI, AUTOMATIC1111)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from abby_core.config import A1111Settings, ApiSettings, ProviderName, Settings, redact_url
from abby_core.doctor.report import Check, fail, ok, skip
from abby_core.errors import (
    AbbyError,
    ConfigError,
    GenerationTimeout,
    GenerationUnavailable,
    ProviderAuthError,
    ProviderOutOfCredits,
    ProviderRejected,
    ProviderUnreachable,
)
from abby_core.generation import ImageGenerator
from abby_core.generation.automatic1111 import Automatic1111Provider, WebUIReport
from abby_core.generation.comfyui import ComfyUIProvider, ServerReport, WorkflowIssue
from abby_core.generation.generator import build_provider

__all__ = ["image_server_check", "stability_check"]


def _providers(api: ApiSettings) -> str:
    """``IMAGE_PROVIDER=x`` (and the fallback), for a skip's detail."""
    shown = f"IMAGE_PROVIDER={api.provider}"
    return shown + (f", IMAGE_PROVIDER_FALLBACK={api.fallback}" if api.fallback else "")


async def stability_check(settings: Settings, generator: ImageGenerator) -> Check:
    """Whether the Stability key is accepted, when Stability is IMAGE_PROVIDER or its fallback."""
    api = settings.api
    if api.provider == "offline" and api.fallback != "stability":
        return skip("stability", "IMAGE_PROVIDER=offline: no key needed, images are local previews")
    if "stability" not in (api.provider, api.fallback):
        return skip("stability", f"{_providers(api)}: Stability is not used, so no key is needed")
    if api.provider == "stability" and not generator.configured and "provider" not in api.model_fields_set:
        # A fresh install: Stability is only the default. Nothing is broken, something is still to set.
        return skip(
            "stability",
            "not configured yet: set STABILITY_API_KEY (Stability AI), or IMAGE_PROVIDER=comfyui, automatic1111 "
            "or offline; until then, images need --provider offline",
        )
    if api.provider == "stability":
        fix = "Set STABILITY_API_KEY, or IMAGE_PROVIDER=offline to try Abby without a provider."
        return await _key_check(api, generator.configured, generator.get_balance, "image generation", fix)
    # Stability is only the fallback: the generator's balance would be the first provider's.
    fallback = build_provider("stability", api)
    try:
        fix = "Set STABILITY_API_KEY, or unset IMAGE_PROVIDER_FALLBACK."
        return await _key_check(api, fallback.configured, fallback.get_balance, "the Stability fallback", fix)
    finally:
        await fallback.aclose()


async def _key_check(
    api: ApiSettings, configured: bool, balance: Callable[[], Awaitable[float | None]], what: str, missing_fix: str
) -> Check:
    if not configured:
        return fail("stability", f"STABILITY_API_KEY is not set: {what} is disabled", missing_fix)
    try:
        credits = await balance()
    except (ProviderAuthError, ProviderOutOfCredits) as exc:
        return fail("stability", exc.message, "Check STABILITY_API_KEY and the account at platform.stability.ai.")
    except GenerationUnavailable as exc:
        return fail("stability", exc.message, f"Check that {api.stability_api_host} is reachable.")
    except AbbyError as exc:
        return fail("stability", exc.message)
    shown = f" ({credits:g} credits left)" if credits is not None else ""
    return ok("stability", f"the key is accepted{shown}")


# -- image servers ----------------------------------------------------------------------

_LOCAL: dict[ProviderName, str] = {"comfyui": "ComfyUI", "automatic1111": "AUTOMATIC1111"}
_UNREACHABLE_FIX = {
    "comfyui": "Check COMFYUI_URL. On another machine, ComfyUI must be started with --listen "
    "and its port (8188 by default) let through the firewall.",
    "automatic1111": "Check A1111_URL. On another machine, the web UI must be started with --listen --api "
    "and its port (7860 by default) let through the firewall.",
}
_WEBUI_SETTINGS = {"model": "A1111_MODEL", "sampler": "A1111_SAMPLER", "upscaler": "A1111_UPSCALER"}
_WEBUI_FIX = {
    "model": "Set A1111_MODEL to a checkpoint the server lists (or empty for its current one), "
    "or put the checkpoint in the web UI's models/Stable-diffusion folder.",
    "sampler": "Set A1111_SAMPLER to a sampler the server lists, or leave it empty for the default.",
    "upscaler": "Set A1111_UPSCALER to an upscaler the server lists, or put the model in the web UI's "
    "models/ESRGAN (or RealESRGAN) folder.",
}


def _names(names: tuple[str, ...], limit: int = 8) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _comfyui_verdict(report: ServerReport, url: str) -> Check:
    where = f"ComfyUI {report.version} at {url}" if report.version else f"ComfyUI at {url}"
    if report.device:
        # "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync": the allocator says nothing to an operator
        device = report.device.split(" : ")[0]
        memory = "RAM" if report.on_cpu else "VRAM"  # on a CPU, ComfyUI's "vram" is the machine's RAM
        vram = f", {report.vram_total / 1024**3:.0f} GB {memory}" if report.vram_total else ""
        where += f" ({device}{vram})"
    if not report.issues:
        kinds = _and(list(report.workflows)) if report.workflows else "no"
        return ok("image_server", f"{where}: every node and model of the {kinds} workflows is installed")
    problems = [_issue_text(issue) for issue in report.issues[:3]]
    if len(report.issues) > 3:
        problems.append(f"and {len(report.issues) - 3} more")
    return fail("image_server", f"{where}: " + "; ".join(problems), _issue_fixes(report.issues))


def _issue_text(issue: WorkflowIssue) -> str:
    node = f"the {issue.kind} workflow ({issue.workflow}) node {issue.node_id}"
    if issue.input_name is None:
        return f"{node} uses {issue.class_type}, which is not installed"
    return (
        f"{node} ({issue.class_type}) loads {issue.input_name} {issue.value!r}, which the server does "
        f"not have (it has: {_names(issue.choices)})"
    )


def _issue_fixes(issues: tuple[WorkflowIssue, ...]) -> str:
    """One fix per missing node class or file (the first three), naming the workflow files that use it."""
    used_by: dict[tuple[str, str | None, bool], list[str]] = {}  # (class or file, folder, is a node) -> kinds
    for issue in issues:
        node = issue.input_name is None
        kinds = used_by.setdefault((issue.class_type if node else issue.value or "", issue.folder, node), [])
        if issue.kind not in kinds:
            kinds.append(issue.kind)
    fixes: list[str] = []
    for (missing, folder, node), kinds in list(used_by.items())[:3]:
        files = ", ".join(f"{kind}.json" for kind in kinds)
        workflow = f"the workflow{'s' if len(kinds) > 1 else ''} (COMFYUI_WORKFLOWS/{files})"
        if node:
            fixes.append(
                f"Install the custom node that provides {missing} (e.g. with ComfyUI-Manager) and restart "
                f"ComfyUI, or point {workflow} at installed nodes."
            )
        else:
            where = f"ComfyUI's {folder} folder" if folder else "the matching folder under ComfyUI's models/"
            fixes.append(f"Put {missing} in {where}, or point {workflow} at an installed one.")
    return " ".join(fixes)


def _webui_verdict(report: WebUIReport, url: str, a1111: A1111Settings) -> Check:
    where = f"AUTOMATIC1111 at {url}"
    if report.unknown:
        problems = [
            f"{_WEBUI_SETTINGS[u.setting]} {u.wanted!r} is not on the server (it has: {_names(u.available)})"
            for u in report.unknown
        ]
        return fail(
            "image_server", f"{where}: " + "; ".join(problems), " ".join(_WEBUI_FIX[u.setting] for u in report.unknown)
        )
    lists = f"{len(report.models)} checkpoints, {len(report.samplers)} samplers and {len(report.upscalers)} upscalers"
    configured = [
        f"{_WEBUI_SETTINGS[k]} {v!r}"
        for k, v in (("model", a1111.model), ("sampler", a1111.sampler), ("upscaler", a1111.upscaler))
        if v
    ]
    found = f"; {_and(configured)} {'is' if len(configured) == 1 else 'are'} among them" if configured else ""
    return ok("image_server", f"{where}: the API answers with {lists}{found}")


async def _image_server(name: ProviderName, api: ApiSettings) -> Check:
    """One local server's verdict: its provider's ``inspect()``, each error with its fix."""
    label = _LOCAL[name]
    url = redact_url(api.comfyui.url if name == "comfyui" else api.a1111.url)
    try:
        provider = build_provider(name, api)
    except ConfigError as exc:
        return fail("image_server", f"{label}: {exc.message}", "Fix the setting or workflow file named above.")
    try:
        if isinstance(provider, ComfyUIProvider):
            return _comfyui_verdict(await provider.inspect(), url)
        assert isinstance(provider, Automatic1111Provider)
        return _webui_verdict(await provider.inspect(), url, api.a1111)
    except ProviderUnreachable:
        return fail("image_server", f"{label}: the image server at {url} is not reachable", _UNREACHABLE_FIX[name])
    except ProviderAuthError as exc:
        status = f" (HTTP {exc.status})" if exc.status else ""
        if name == "comfyui":
            return fail(
                "image_server",
                f"{label} at {url} refused the request{status}",
                "Check COMFYUI_AUTH_HEADER and COMFYUI_AUTH_HEADER_NAME (the header a proxy in front of "
                "ComfyUI requires).",
            )
        asked = "refused A1111_USERNAME/A1111_PASSWORD" if api.a1111.username else "requires a user name and password"
        return fail(
            "image_server",
            f"{label} at {url} {asked}{status}",
            "Check A1111_USERNAME/A1111_PASSWORD: they must match the web UI's --api-auth user:password.",
        )
    except (ConfigError, ProviderRejected) as exc:
        if isinstance(exc, ConfigError) or exc.status == 404:
            if name == "comfyui":
                return fail(
                    "image_server",
                    f"{label}: {url} does not answer as ComfyUI (HTTP 404)",
                    "Check that COMFYUI_URL is ComfyUI's address, as in http://gpu-box:8188.",
                )
            return fail(
                "image_server",
                f"{label}: {url} does not answer as the web UI API (HTTP 404)",
                "Start the web UI with --api (add it to COMMANDLINE_ARGS), and check A1111_URL.",
            )
        return fail("image_server", f"{label} at {url}: {exc.message}")
    except GenerationTimeout:
        return fail(
            "image_server",
            f"{label} at {url} did not answer in time",
            "Check that the server is not stuck or still starting, then try again.",
        )
    except AbbyError as exc:
        return fail("image_server", f"{label} at {url}: {exc.message}")
    finally:
        await provider.aclose()


async def image_server_check(api: ApiSettings) -> Check:
    """One verdict for the local servers IMAGE_PROVIDER and IMAGE_PROVIDER_FALLBACK name (failed if any fails)."""
    local = [name for name in (api.provider, api.fallback) if name in _LOCAL]
    if not local:
        return skip("image_server", f"{_providers(api)}: no local image server (ComfyUI, AUTOMATIC1111) to check")
    verdicts = [await _image_server(name, api) for name in local]
    if len(verdicts) == 1:
        return verdicts[0]
    failed = [v for v in verdicts if v.status == "fail"]
    fix = " ".join(v.fix for v in failed if v.fix) or None
    return Check("image_server", "fail" if failed else "ok", "; ".join(v.detail for v in verdicts), fix)
