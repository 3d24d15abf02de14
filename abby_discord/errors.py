"""The one place where an exception becomes what a member reads.

:func:`user_message` turns every core error (and the adapter's own refusals) into a
short message; :func:`report` sends it ephemerally, whether or not the interaction
was already answered. On a server that sells quota through Discord's store
(``PREMIUM_TIERS``, ``CREDIT_PACKS``), a refusal for the daily limit or a full storage
also offers what can lift it, as premium buttons under the message (:func:`store_offer`).
Anything unexpected is logged with a short reference id that the member sees, so an
admin can find it in the logs; its text is never shown.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import datetime

import discord
from discord import app_commands

from abby_core.admission import QueueTimeout, UserBusy
from abby_core.config import DiscordSettings
from abby_core.errors import (
    AbbyError,
    ConfigError,
    ContentFiltered,
    DailyLimitExceeded,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    GlobalStorageFull,
    ImageNotFound,
    InvalidImage,
    InvalidInput,
    InvalidKey,
    InvalidPrompt,
    InvalidUser,
    LedgerCorrupt,
    NotConfigured,
    PromptRejected,
    ProviderAuthError,
    ProviderOutOfCredits,
    ProviderRejected,
    ProviderUnreachable,
    QuotaExceeded,
    RateLimited,
    RequestTooLarge,
    ReservationInvalid,
    SaveOutcomeUnknown,
    StorageError,
    StorageUnavailable,
    UserBlocked,
    UserStorageFull,
)
from abby_core.images import ACCEPTED

__all__ = [
    "MAX_OFFERS",
    "PUBLIC_DEFER",
    "ChannelNotAllowed",
    "NotAdmin",
    "NotOwner",
    "premium_view",
    "report",
    "store_offer",
    "timestamp",
    "user_message",
]

log = logging.getLogger("abby.discord")

# Set in ``interaction.extras`` by commands that defer publicly: an error then replaces
# the public "thinking…" message with a private one instead of editing it in public.
PUBLIC_DEFER = "abby_public_defer"


class NotAdmin(app_commands.CheckFailure):
    """A member without Manage Server or an admin role used an admin command."""


class ChannelNotAllowed(app_commands.CheckFailure):
    """Images are not made in this channel (``IMAGE_CHANNEL_IDS``, ``IMAGE_AGE_RESTRICTED_ONLY``)."""

    def __init__(self, allowed: tuple[int, ...], *, age_restricted: bool) -> None:
        super().__init__("images are not made in this channel")
        self.allowed = allowed
        self.age_restricted = age_restricted


class NotOwner(Exception):
    """Someone other than an image's owner pressed its Delete button."""


def timestamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp (``<t:1764028800:R>``): each member sees it in their own time zone."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


_NOTHING_CHARGED = "Nothing was charged"
# The slash-command option a member filled in for each request field a core error can name.
_OPTIONS = {"aspect_ratio": "aspect_ratio", "style_preset": "style", "prompt": "prompt"}
MAX_OFFERS = 5  # premium buttons under a refusal: one action row
# What the member can do about a refused prompt or image, by the error's ``reason``.
_PROMPT_ADVICE = {
    "empty": "Please describe the image you want.",
    "too_long": "Please shorten it.",
    "control_character": "Please remove it.",
    "invalid_character": "Please retype it.",
    "format_character": "Please retype it without that character.",
    None: "Please change your prompt and try again.",
}
_IMAGE_ADVICE = {
    "unsupported_format": f"Please upload a {ACCEPTED} image.",
    "empty": f"Please upload a {ACCEPTED} image.",
    "damaged": f"Please upload a complete {ACCEPTED} image.",
    "too_detailed": "Please upload a smaller image.",
    None: "Please try a different image.",
}


def store_offer(error: BaseException, store: DiscordSettings | None) -> tuple[int, ...]:
    """The SKU ids a refusal offers to buy: none unless the server sells something.

    Past the daily limit: the credit packs, then the subscriptions; storage full: the
    subscriptions (a pack gives images, not room). At most :data:`MAX_OFFERS`.
    """
    if store is None or not store.sells:
        return ()
    exc = _unwrap(error)
    subscriptions = tuple(t.sku_id for t in store.premium_tiers)
    if isinstance(exc, DailyLimitExceeded):
        return (*(p.sku_id for p in store.credit_packs), *subscriptions)[:MAX_OFFERS]
    if isinstance(exc, UserStorageFull):
        return subscriptions[:MAX_OFFERS]
    return ()


def premium_view(sku_ids: tuple[int, ...]) -> discord.ui.View:
    """One premium button per SKU: Discord draws each one (name, price) and sells it.

    A premium button carries only its ``sku_id``: Discord refuses a label, emoji, url or custom_id.
    """
    view = discord.ui.View(timeout=None)
    for sku_id in sku_ids[:MAX_OFFERS]:
        view.add_item(discord.ui.Button(style=discord.ButtonStyle.premium, sku_id=sku_id))
    return view


def _offer_sentence(error: BaseException, store: DiscordSettings | None) -> str:
    """What the premium buttons under a refusal are for (empty when there are none)."""
    offered = set(store_offer(error, store))
    if store is None or not offered:
        return ""
    packs = any(p.sku_id in offered for p in store.credit_packs)
    subscriptions = any(t.sku_id in offered for t in store.premium_tiers)
    if isinstance(_unwrap(error), UserStorageFull):
        return " Or subscribe below for more room."
    if packs and subscriptions:
        return (
            " Can't wait? Buy a pack of credits below (each credit is one more image, on any day) "
            "or subscribe for a bigger daily allowance."
        )
    if packs:
        return " Can't wait? Buy a pack of credits below: each credit is one more image, on any day."
    return " Want more every day? Subscribe below for a bigger daily allowance."


def _unwrap(error: BaseException) -> BaseException:
    for _ in range(5):  # CommandInvokeError / TransformerError wrap the real cause
        inner = getattr(error, "original", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def user_message(error: BaseException, *, store: DiscordSettings | None = None) -> str:
    """What the member is told about ``error``: short, actionable, never a secret or a traceback.

    ``store``: the bot's Discord settings; when it sells something, a refusal that a purchase
    can lift says so (the buttons are added by :func:`report`).
    """
    exc = _unwrap(error)
    match exc:
        case UserBusy():
            return "I'm still working on your last image — please wait for it to finish before asking for another."
        case QueueTimeout():
            return f"I'm very busy right now and your request waited too long. {_NOTHING_CHARGED} — please try again."
        case NotOwner():
            return "Only the member who made this image can delete it."
        case ChannelNotAllowed():
            kind = "age-restricted channels" if exc.age_restricted else "some channels"
            where = ", ".join(f"<#{c}>" for c in exc.allowed[:10])
            return f"Images are only made in {kind} on this server" + (f": {where}." if where else ".")
        case NotAdmin():
            return "This command is for server admins (Manage Server permission or an admin role)."
        case app_commands.NoPrivateMessage():
            return "This command only works in a server."
        case app_commands.CheckFailure():
            return "You can't use this command here."
        case UserBlocked():
            return "You have been blocked from generating images on this server. Ask an admin if this is a mistake."
        case DailyLimitExceeded():
            resets = exc.resets_at
            when = f"{timestamp(resets)} ({timestamp(resets, 't')})" if resets else "at midnight UTC"
            return (
                f"You've used all {exc.limit} of your image generations for today. Your quota resets {when}."
                + _offer_sentence(exc, store)
            )
        case UserStorageFull():
            return (
                f"Your image storage is full ({_mb(exc.used)} of {_mb(exc.limit)}). Delete some of your images "
                "(the Delete button under each one; /gallery lists them) or wait for old ones to expire."
                + _offer_sentence(exc, store)
            )
        case GlobalStorageFull():
            return (
                f"This server's image storage is full ({_mb(exc.used)} of {_mb(exc.limit)}). Please try again "
                "later — an admin can free space with /abby-admin cleanup."
            )
        case QuotaExceeded():
            return f"A limit on this server is reached ({exc.used} of {exc.limit}). Please try again later."
        case ContentFiltered():
            return "The image service's safety filter blocked this request. Please try a different prompt."
        case PromptRejected():
            because = f" ({exc.detail})" if exc.detail else ""
            return f"The image service refused the request{because}. Please change your prompt or options."
        case RequestTooLarge():
            return "That image is too large for the image service. Please use a smaller image."
        case ProviderAuthError() | ProviderOutOfCredits():
            log.error("The image service refused the bot's account (%s): %s", exc.code, exc.message)
            return (
                "The bot's image service account has a problem, so I can't make images right now. "
                "An admin should check the bot's logs."
            )
        case ProviderRejected():
            log.warning("The image provider refused a request (%s): %s", exc.code, exc.message)
            return f"The image service did not accept this request. {_NOTHING_CHARGED}. Please try something else."
        case GenerationTimeout():
            return f"The image service took too long to answer. {_NOTHING_CHARGED} — please try again."
        case RateLimited():
            return (
                f"The image service is busy right now (rate limited). {_NOTHING_CHARGED} — please try again "
                "in a minute."
            )
        case ProviderUnreachable():
            return f"The image server is not reachable right now. {_NOTHING_CHARGED} — please try again later."
        case GenerationUnavailable():
            return f"The image service is unavailable right now. {_NOTHING_CHARGED} — please try again later."
        case GenerationError():
            return f"The image could not be made. {_NOTHING_CHARGED} — please try again."
        case NotConfigured():
            return "Image generation is not configured on this server yet — an admin needs to set it up."
        case ConfigError():
            log.error("Configuration problem: %s", exc.message)
            return "The bot's configuration has a problem. An admin should check the bot's logs."
        case SaveOutcomeUnknown():
            log.warning("Save outcome unknown: %s", exc.message)
            return (
                "Image storage stopped answering just as your image was being saved. If it was kept, it is in "
                "/gallery and counts for today; if it is not there, nothing was charged."
            )
        case StorageUnavailable():
            log.warning("Storage unavailable: %s", exc.message)
            return (
                f"Image storage is unavailable right now. {_NOTHING_CHARGED} — please try again later; "
                "an admin should check the bot's logs."
            )
        case ImageNotFound():
            return "That image no longer exists — it was deleted or has expired."
        case LedgerCorrupt():
            log.error("Quota ledger problem: %s", exc.message)
            return "Your quota records are being repaired. Please try again in a moment."
        case ReservationInvalid():
            log.error("Reservation problem: %s", exc.message)
            return f"Your image could not be saved. {_NOTHING_CHARGED} — please try again."
        case StorageError():
            log.warning("Storage problem: %s", exc.message)
            return f"Image storage could not do this right now. {_NOTHING_CHARGED} — please try again later."
        case InvalidUser():
            return "That is not a valid Discord user."
        case InvalidKey(reason="other_user"):
            return "You can only manage your own images."
        case InvalidKey():
            what = "an archived image" if exc.parameter == "archived_key" else "an image key"
            given = f"{exc.value!r}" if exc.value is not None else "That"
            return f"{given} is not {what} from your gallery."
        case InvalidInput(parameter=str(parameter), allowed=tuple(allowed)) if parameter in _OPTIONS:
            return f"The `{_OPTIONS[parameter]}` option must be one of {', '.join(allowed)} (got {exc.value!r})."
        case InvalidPrompt():
            return f"{exc.message} {_PROMPT_ADVICE.get(exc.reason, _PROMPT_ADVICE[None])}"
        case InvalidImage():
            return f"{exc.message} {_IMAGE_ADVICE.get(exc.reason, _IMAGE_ADVICE[None])}"
        case InvalidInput():
            return f"{exc.message} {_NOTHING_CHARGED}."
        case AbbyError():
            log.warning("Unworded error (%s): %s", exc.code, exc.message)
            return f"That could not be done. {_NOTHING_CHARGED} — please try again later."
    ref = secrets.token_hex(4)
    log.error("Unexpected error (ref %s)", ref, exc_info=exc)
    return (
        f"Something went wrong on my side (ref {ref}). Please try again later; "
        "if it keeps happening, give an admin this reference."
    )


def _store_of(interaction: discord.Interaction) -> DiscordSettings | None:
    """The bot's Discord settings, if the client is Abby (a bare client sells nothing)."""
    section = getattr(getattr(interaction.client, "settings", None), "discord", None)
    return section if isinstance(section, DiscordSettings) else None


async def report(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the member about ``error`` in a message only they see (with premium buttons, see :func:`store_offer`)."""
    store = _store_of(interaction)
    message = user_message(error, store=store)
    offer = store_offer(error, store)
    view: discord.ui.View = premium_view(offer) if offer else discord.utils.MISSING
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True, view=view)
            return
        if interaction.extras.get(PUBLIC_DEFER):
            # A followup would turn the public "thinking…" message into the error; drop it instead.
            interaction.extras[PUBLIC_DEFER] = False
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
        await interaction.followup.send(message, ephemeral=True, view=view)
    except discord.HTTPException:
        log.warning("Could not tell member %s about an error: %s", interaction.user.id, message, exc_info=True)
