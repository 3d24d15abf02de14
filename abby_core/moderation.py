"""The prompt blocklist: words, phrases and patterns a server does not allow, for every provider.

Local providers (ComfyUI, AUTOMATIC1111) filter nothing, so the check happens here,
before any provider is called. Everything is pure: build a :class:`Blocklist` once
from the settings, then per prompt call :meth:`Blocklist.check` (raises
:class:`InvalidPrompt` with :data:`REFUSAL`) or :meth:`Blocklist.find` (returns what
matched, for the operator's log; never shown to the member).

Entries, one per line of a blocklist file or one per item of the setting:

* blank lines and lines whose first non-blank character is ``#`` are ignored
  (``#`` elsewhere is part of the entry); surrounding whitespace is ignored;
* ``re:<regex>`` is a regular expression (see below);
* anything else is a word or a phrase.

Normalisation (:func:`normalize`), applied to prompts and word entries alike:

1. NFKD compatibility decomposition: fullwidth ``ｂａｄ``, mathematical ``𝐛𝐚𝐝``,
   circled, superscript and ligature forms become plain characters;
2. every combining mark (Unicode categories Mn, Mc, Me: accents and other
   diacritics, variation selectors) and every format character (Cf: zero-width
   space, joiners, soft hyphen, word joiner, BOM, bidi controls, tag characters) is
   removed, as are the invisible Hangul fillers;
3. Cyrillic, Greek and other letters that look Latin (``а е о р с х у і ѕ ј ԁ``,
   ``α ο ν ι``, ``ɡ ı``, small capitals, regional indicators) become that Latin
   letter, judged before case folding so that Greek ``Η`` is ``h`` but ``η`` is ``n``;
4. case folding (``ß`` is ``ss``), then steps 2-3 again for what folding produced.

Word and phrase entries then match as follows:

* **whole words only**: the characters just before and after the match may not be
  letters or digits, so ``ass`` matches neither ``class`` nor ``c1ass`` nor
  ``passage``, and ``bad`` does not match ``bad2``. A letter of a script written
  without spaces (Han, kana, Thai, Lao, Khmer, Myanmar) counts as a boundary, and an
  entry beginning or ending in such a script matches inside longer text at that end;
* **leetspeak**: each letter of an entry also matches its stand-ins ``a 4 @``,
  ``b 8``, ``e 3``, ``g 9``, ``i 1``, ``l 1``, ``o 0``, ``s 5 $``, ``t 7``. This is
  done in the pattern, not in the prompt, so the word boundaries above still see
  digits as digits. Digits written in an entry match only themselves;
* **separators**: punctuation, symbols and ``_`` may appear anywhere inside a word
  (``b.a.d``, ``b-a-d``, ``b_a_d``, ``b*a*d``). Spaces may split a word only when it
  is spelled out with a separator in every gap (``b a d``, ``b. a. d``), so ``s ex``
  and ``ba d`` match neither ``sex`` nor ``bad``. The words of a phrase may be
  separated by any run of separators, or none (``bad word``, ``bad-word``,
  ``badword``);
* **stretched letters**: a letter written once in an entry also matches three or
  more of it in a row (``baaad``), but not two, so ``god`` does not match ``good``;
  a letter written twice matches two or more (``ass`` matches ``asss``). A stretch is
  one unbroken run: ``b.a.a.a.d`` does not match ``bad``.

Regular expressions search the normalised prompt (lowercase, no accents, look-alikes
replaced by Latin letters, digits and punctuation unchanged), ignoring case, with no
word boundaries or leetspeak added: write ``\\bk[i1]ll\\b`` to say so. A regex seen to
match empty text (``a*``, ``\\b``) is refused, as it would match every prompt; any
other zero-length match never counts.

All word entries are compiled into one regular expression shaped as a trie, and all
plain regexes into another, so a check costs about one pass over the prompt however
many entries there are, and no prompt makes it scan any stretch of text more than a
bounded number of times. A regex with capturing groups (which may hold
backreferences) or global inline flags is searched on its own.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from abby_core.config import ModerationSettings
from abby_core.errors import ConfigError, InvalidPrompt

__all__ = ["REFUSAL", "Blocklist", "Match", "load_blocklist", "normalize"]

REFUSAL = "That prompt contains something this server does not allow."
"""The only text a member is shown: it never names the entry or repeats the prompt."""


# -- normalisation ---------------------------------------------------------------------------

_DROPPED_CATEGORIES = frozenset({"Mn", "Mc", "Me", "Cf"})
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers, categorised as letters


def _table(*rows: tuple[str, str]) -> dict[int, str]:
    table: dict[int, str] = {}
    for look_alikes, latin in rows:
        table.update((ord(a), b) for a, b in zip(look_alikes, latin, strict=True))
    return table


_CONFUSABLES = _table(
    # Cyrillic, lowercase: uppercase В Н М Т К fold onto в н м т к, which look alike too.
    ("авекмнопрстухьіјѕԁһӏԛԝүҽ", "abekmhonpctyxbijsdhlqwye"),
    # Greek uppercase, before folding: Η is H, Μ is M, Ν is N, Υ is Y.
    ("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "abezhikmnoptyx"),
    ("αβγεηικμνορςτυχωϳ", "abyenikuvopctuxwj"),  # ς too: NFKD turns the lunate sigma ϲ into it
    # Latin letters that NFKD leaves alone, and small capitals.
    ("ıȷɡɑɩøłđħ", "ijgaioldh"),
    ("ᴀʙᴄᴅᴇɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "abcdeghijklmnoprstuvwyz"),
    # Regional indicator symbols, used to spell words.
    ("".join(map(chr, range(0x1F1E6, 0x1F200))), "abcdefghijklmnopqrstuvwxyz"),
)


class _Skeleton(dict[int, str | None]):
    """A ``str.translate`` table that drops marks and format characters and maps look-alikes.

    Each code point is classified on first sight and remembered (up to a bound, so no
    stream of prompts can grow it without limit): later lookups stay in C.
    """

    _LIMIT = 65_536

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        value = None if unicodedata.category(ch) in _DROPPED_CATEGORIES or ch in _INVISIBLE_LETTERS else ch
        value = _CONFUSABLES.get(code, value)
        if len(self) < self._LIMIT:
            self[code] = value
        return value


_SKELETON = _Skeleton()


def normalize(text: str) -> str:
    """Return the skeleton of ``text`` that blocklist entries are matched against.

    The steps are in the module docstring. Leetspeak is not replaced here (word
    entries handle it in their patterns), so digits and punctuation are kept. The
    result can be shorter or longer than ``text`` (``ﬁ`` becomes ``fi``); spans in a
    :class:`Match` refer to it. ASCII text only has its case folded.
    """
    text = unicodedata.normalize("NFKD", text)
    if not text.isascii():
        text = text.translate(_SKELETON)
    text = text.casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text).translate(_SKELETON)
        # With every mark gone only Hangul jamo can recompose: keeps Korean spans readable.
        text = unicodedata.normalize("NFC", text)
    return text


# -- word patterns ----------------------------------------------------------------------------

_LEET = {"a": "4@", "b": "8", "e": "3", "g": "9", "i": "1", "l": "1", "o": "0", "s": "5$", "t": "7"}
_ENTRY_LEET = str.maketrans({"@": "a", "$": "s"})  # in an entry they would otherwise be separators
_UNDERSCORE = str.maketrans({"_": "-"})  # same length, so spans hold; lets one class mean "punctuation"

_WORD = re.compile(r"[^\W_]+")  # letters and digits
# Letters of scripts written without spaces (Thai, Lao, Myanmar, Khmer, kana, Han).
_UNSPACED = (
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)
_IS_UNSPACED = re.compile(_UNSPACED)
# A word starts and ends where no letter or digit touches it, or where one of those scripts does.
_WORD_START = rf"(?:(?<![^\W_])|(?<={_UNSPACED}))"
_WORD_END = rf"(?:(?![^\W_])|(?={_UNSPACED}))"
# Possessive: the separator classes never overlap the letter classes, which hold every "@" and "$".
_INSIDE_WORD = r"[^\w\s@$]*+"
_BETWEEN_WORDS = r"[^\w@$]*+"
_SPELLED_GAP = r"[^\w@$]++"


def _letter(ch: str) -> str:
    stand_ins = _LEET.get(ch)
    if stand_ins is None:
        return re.escape(ch)
    return "[" + re.escape(ch + stand_ins) + "]"


def _not_mid_run(first: str) -> str:
    # A match never starts inside a run of its first letter (or after a symbol standing in
    # for it, such as "@"), so a long run is scanned once rather than once per character.
    if _IS_UNSPACED.match(first):
        return f"(?<!{re.escape(first)})"
    symbols = "".join(c for c in _LEET.get(first, "") if not c.isalnum())
    return f"(?<![{re.escape(symbols)}])" if symbols else ""


@dataclass(frozen=True)
class _WordForms:
    bounded_start: bool  # whether the match must start at a word boundary
    bounded_end: bool
    paths: tuple[tuple[str, ...], ...]  # contiguous form, then the spelled-out form


def _word_forms(normalized_entry: str) -> _WordForms | None:
    """The regex fragments of a word or phrase entry, or ``None`` when it has no letter or digit.

    Each path is a path in a trie; fragments are small so that entries sharing a
    beginning share nodes.
    """
    words = _WORD.findall(normalized_entry.translate(_ENTRY_LEET))
    if not words:
        return None
    first = _not_mid_run(words[0][0])

    contiguous = [first]
    for w, word in enumerate(words):
        if w:
            contiguous.append(_BETWEEN_WORDS)
        for r, (ch, run) in enumerate(itertools.groupby(word)):
            n = len(list(run))
            letter = _letter(ch)
            if r:
                contiguous.append(_INSIDE_WORD)
            # Written once: one, or stretched to three or more. Written n times: n or more.
            contiguous += [letter, f"(?:{letter}{{2,}})?" if n == 1 else f"{letter}{{{n - 1},}}"]
    paths = [tuple(contiguous)]

    letters = [_letter(ch) for ch in "".join(words)]
    if len(letters) > 1:
        spelled = [first, letters[0]]
        for letter in letters[1:]:
            spelled += [_SPELLED_GAP, letter]
        paths.append(tuple(spelled))
    return _WordForms(
        bounded_start=not _IS_UNSPACED.match(words[0][0]),
        bounded_end=not _IS_UNSPACED.match(words[-1][-1]),
        paths=tuple(paths),
    )


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    entry: int | None = None  # the entry ending here (the first, when several normalise alike)


def _emit(node: _Node, owners: list[int]) -> str:
    """The trie as a regex; each entry's end is an empty group, its entry appended to ``owners``."""
    chain: list[str] = []
    while node.entry is None and len(node.children) == 1:
        fragment, node = next(iter(node.children.items()))
        chain.append(fragment)
    branches: list[str] = []
    if node.entry is not None:
        owners.append(node.entry)  # groups are numbered in text order, which is this order
        branches.append("()")
    branches += [fragment + _emit(child, owners) for fragment, child in node.children.items()]
    if len(branches) == 1:
        return "".join(chain) + branches[0]
    return "".join(chain) + "(?:" + "|".join(branches) + ")"


# -- the blocklist ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Which entry matched a prompt: for the operator's log, never for the member.

    ``entry`` is the entry as written (``"re:..."`` for a regex); ``span`` is the
    ``(start, end)`` of the match in :func:`normalize` of the prompt.
    """

    entry: str
    span: tuple[int, int]


@dataclass(frozen=True)
class _Compiled:
    pattern: re.Pattern[str]
    owners: tuple[int, ...]  # group number - 1 -> index of the entry


_EMPTY_PROBES = ("", "a", " ", "a b", "0")


class Blocklist:
    """Words, phrases and regular expressions that a prompt may not contain.

    ``entries`` follow the file syntax, one entry per item; ``source`` names them in
    errors. An empty blocklist allows every prompt. Raises :class:`ConfigError`
    listing every invalid entry (a regex that does not compile, is empty or matches
    empty text; a word with no letter or digit) with where it came from. Building
    compiles the patterns once (about half a second per thousand entries); checking
    is then fast and the blocklist is immutable, so one instance can be shared.
    """

    def __init__(self, entries: Iterable[str] = (), *, source: str = "blocklist") -> None:
        self._build([(f"{source} entry {i}", entry) for i, entry in enumerate(entries, 1)], source)

    @classmethod
    def from_text(cls, text: str, *, source: str = "blocklist file") -> Blocklist:
        """Build from the text of a blocklist file; errors name ``source`` and the line number."""
        blocklist = cls.__new__(cls)
        blocklist._build(_lines(text, source), source)
        return blocklist

    @classmethod
    def from_settings(
        cls, entries: Sequence[str], file_text: str | None, *, source: str = "PROMPT_BLOCKLIST"
    ) -> Blocklist:
        """Build from the setting's items and, when given, the blocklist file's text; both apply.

        Errors name ``"{source} entry 2"`` or ``"the {source} file, line 7"``.
        """
        located = [(f"{source} entry {i}", entry) for i, entry in enumerate(entries, 1)]
        if file_text is not None:
            located += _lines(file_text, f"the {source} file")
        blocklist = cls.__new__(cls)
        blocklist._build(located, source)
        return blocklist

    def _build(self, located: list[tuple[str, str]], source: str) -> None:
        kept: list[str] = []
        problems: list[str] = []
        tries: dict[tuple[bool, bool], _Node] = {}  # by (bounded start, bounded end)
        regexes: list[tuple[int, str]] = []
        separate: list[tuple[int, re.Pattern[str]]] = []
        for where, raw in located:
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.startswith("re:"):
                regex = entry[3:].strip()
                problem = _regex_problem(regex)
                if problem:
                    problems.append(f"{where}: {entry!r} {problem}")
                    continue
                if re.compile(regex).groups or not _compiles(f"(?i:{regex})"):
                    # Its own groups would shift the numbering (and backreferences); global flags cannot nest.
                    separate.append((len(kept), re.compile(regex, re.IGNORECASE)))
                else:
                    regexes.append((len(kept), regex))
            else:
                forms = _word_forms(normalize(entry))
                if forms is None:
                    problems.append(f"{where}: {entry!r} has no letter or digit to match.")
                    continue
                root = tries.setdefault((forms.bounded_start, forms.bounded_end), _Node())
                for path in forms.paths:
                    node = root
                    for fragment in path:
                        node = node.children.setdefault(fragment, _Node())
                    if node.entry is None:
                        node.entry = len(kept)
            kept.append(entry)
        if problems:
            count = f"{len(problems)} invalid entries" if len(problems) > 1 else "an invalid entry"
            raise ConfigError(f"{source} has {count}: " + " ".join(problems), problems=problems)

        self._entries = tuple(kept)
        owners: list[int] = []
        words = [
            (_WORD_START if start else "") + "(?:" + _emit(root, owners) + ")" + (_WORD_END if end else "")
            for (start, end), root in tries.items()
        ]
        self._words = _Compiled(re.compile("|".join(words)), tuple(owners)) if words else None
        self._regexes = (
            _Compiled(re.compile("|".join(f"((?i:{regex}))" for _, regex in regexes)), tuple(i for i, _ in regexes))
            if regexes
            else None
        )
        self._separate = tuple(separate)

    @property
    def entries(self) -> tuple[str, ...]:
        """Every entry kept, as written and in order (comments and blank lines dropped)."""
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:  # never lists the entries: a repr can end up in a trace
        return f"<Blocklist with {len(self._entries)} entries>"

    def find(self, prompt: str) -> Match | None:
        """Return an entry the prompt matches, or ``None`` when the prompt is allowed.

        Word entries are searched first (the leftmost match), then regexes. An empty
        blocklist returns ``None`` without normalising. A regex match of zero length
        never counts.
        """
        if not self._entries:
            return None
        text = normalize(prompt)
        if self._words is not None:
            found = self._words.pattern.search(text.translate(_UNDERSCORE))
            if found is not None and found.lastindex is not None:
                return Match(self._entries[self._words.owners[found.lastindex - 1]], found.span())
        if self._regexes is not None:
            for found in self._regexes.pattern.finditer(text):
                if found.end() > found.start() and found.lastindex is not None:
                    return Match(self._entries[self._regexes.owners[found.lastindex - 1]], found.span())
        for index, pattern in self._separate:
            for found in pattern.finditer(text):
                if found.end() > found.start():
                    return Match(self._entries[index], found.span())
        return None

    def check(self, prompt: str) -> None:
        """Raise :class:`InvalidPrompt` with :data:`REFUSAL` when the prompt matches an entry.

        The message never names the entry nor quotes the prompt; call :meth:`find`
        to log which entry matched.
        """
        if self.find(prompt) is not None:
            raise InvalidPrompt(REFUSAL)


def _lines(text: str, where: str) -> list[tuple[str, str]]:
    return [(f"{where}, line {n}", line) for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1)]


def _compiles(regex: str) -> bool:
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


def _regex_problem(regex: str) -> str | None:
    if not regex:
        return "is an empty regular expression."
    try:
        compiled = re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        return f"is not a valid regular expression ({exc.msg} at position {exc.pos})."
    for probe in _EMPTY_PROBES:
        found = compiled.search(probe)
        if found is not None and found.end() == found.start():
            return "matches empty text, so it would match every prompt."
    return None


def load_blocklist(settings: ModerationSettings) -> Blocklist:
    """The blocklist ``PROMPT_BLOCKLIST`` and ``PROMPT_BLOCKLIST_FILE`` describe (read once, at start).

    Raises :class:`~abby_core.errors.ConfigError` naming the file when it cannot be read, or
    the entry and line that is not a valid pattern.
    """
    text: str | None = None
    if settings.blocklist_file is not None:
        try:
            text = settings.blocklist_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(
                f"PROMPT_BLOCKLIST_FILE {settings.blocklist_file} could not be read ({reason})."
            ) from None
    return Blocklist.from_settings(settings.blocklist, text, source="PROMPT_BLOCKLIST")
